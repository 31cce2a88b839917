// Command modzip writes a module zip the way the go command does
// (golang.org/x/mod/zip CreateFromDir), so the mirror's tests can hash zips
// that Go's own writer made: its file order, its compression, its data
// descriptors.
package main

import (
	"flag"
	"log"
	"os"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

func main() {
	dir := flag.String("dir", "", "module root directory")
	path := flag.String("path", "", "module path")
	version := flag.String("version", "", "module version")
	out := flag.String("out", "", "zip file to write")
	flag.Parse()

	f, err := os.Create(*out)
	if err != nil {
		log.Fatal(err)
	}
	m := module.Version{Path: *path, Version: *version}
	if err := modzip.CreateFromDir(f, m, *dir); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}
