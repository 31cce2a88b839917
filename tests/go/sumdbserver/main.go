// Command sumdbserver serves a real Go checksum database on loopback for the
// mirror's tests: golang.org/x/mod/sumdb's server and note signer over a
// GOPROXY file tree, hashing each module as the go command does.
//
// It prints "ADDR VERIFIER-KEY" on its first line of output, then logs every
// request path, one per line, to -log, so a test can prove what reached it.
//
// With -fork N it also serves a second log signed by the same key, on its own
// address printed as the second line: N synthetic records of its own first,
// then the same modules. The two logs share no history, so a client that
// verified a head of one sees a fork or a rollback in the other.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
)

func main() {
	name := flag.String("name", "sumdb.test", "checksum database name")
	tree := flag.String("tree", "", "GOPROXY file tree holding the modules")
	fill := flag.Int("fill", 0, "synthetic records to log before serving, so full tiles exist")
	logPath := flag.String("log", "", "file receiving one line per request")
	fork := flag.Int("fork", -1, "synthetic records of a second, forked log (none when negative)")
	flag.Parse()

	skey, vkey, err := note.GenerateKey(rand.Reader, *name)
	if err != nil {
		log.Fatal(err)
	}
	gosum := func(path, vers string) ([]byte, error) {
		if strings.HasPrefix(path, "fill.test/") {
			const h = "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
			return []byte(fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n", path, vers, h, path, vers, h)), nil
		}
		epath, err := module.EscapePath(path)
		if err != nil {
			return nil, err
		}
		evers, err := module.EscapeVersion(vers)
		if err != nil {
			return nil, err
		}
		base := filepath.Join(*tree, filepath.FromSlash(epath), "@v", evers)
		zipHash, err := dirhash.HashZip(base+".zip", dirhash.Hash1)
		if err != nil {
			return nil, err
		}
		modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
			return os.Open(base + ".mod")
		})
		if err != nil {
			return nil, err
		}
		return []byte(fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n", path, vers, zipHash, path, vers, modHash)), nil
	}
	server := newLog(skey, gosum, "fill.test/m", *fill)

	var logFile io.Writer = io.Discard
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			log.Fatal(err)
		}
		logFile = f
	}
	var mu sync.Mutex
	logged := func(prefix string, server *sumdb.TestServer) http.Handler {
		handler := sumdb.NewServer(server)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			fmt.Fprintln(logFile, prefix+r.URL.Path)
			mu.Unlock()
			handler.ServeHTTP(w, r)
		})
	}

	listener := listen()
	fmt.Printf("%s %s\n", listener.Addr(), vkey)
	if *fork >= 0 {
		forked := newLog(skey, gosum, "fill.test/fork", *fork)
		forkListener := listen()
		fmt.Printf("%s\n", forkListener.Addr())
		go func() { log.Fatal(http.Serve(forkListener, logged("fork ", forked))) }()
	}
	os.Stdout.Sync()
	log.Fatal(http.Serve(listener, logged("", server)))
}

// newLog is a test log with n synthetic records named prefix0, prefix1, ….
func newLog(skey string, gosum func(path, vers string) ([]byte, error), prefix string, n int) *sumdb.TestServer {
	server := sumdb.NewTestServer(skey, gosum)
	for i := 0; i < n; i++ {
		m := module.Version{Path: fmt.Sprintf("%s%d", prefix, i), Version: "v1.0.0"}
		if _, err := server.Lookup(context.Background(), m); err != nil {
			log.Fatal(err)
		}
	}
	return server
}

func listen() net.Listener {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	return listener
}
