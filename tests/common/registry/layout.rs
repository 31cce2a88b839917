//! OCI image layouts built in the test (no Docker engine): tar layers in
//! gzip "stored" blocks (valid gzip, no compression cost, deterministic),
//! configs, manifests, multi-arch indexes, and `skopeo copy` to push them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::common::process::{run, text, tool};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A blob in a layout.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// A built image or index, as pushed.
#[derive(Clone, Debug)]
pub struct Built {
    pub media_type: &'static str,
    pub digest: String,
    pub size: u64,
    pub layers: Vec<Blob>,
    pub config: Option<Blob>,
}

fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    for (n, entry) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    table
}

/// Writes a gzip member of stored (uncompressed) deflate blocks, hashing the
/// compressed bytes (the blob digest) and the uncompressed ones (the diff ID).
struct StoredGzip<W: Write> {
    out: W,
    table: [u32; 256],
    crc: u32,
    len: u64,
    pending: Vec<u8>,
    blob_hash: Sha256,
    diff_hash: Sha256,
    blob_size: u64,
}

impl<W: Write> StoredGzip<W> {
    fn new(out: W) -> Self {
        let mut gz = StoredGzip {
            out,
            table: crc_table(),
            crc: 0xffff_ffff,
            len: 0,
            pending: Vec::with_capacity(65535),
            blob_hash: Sha256::new(),
            diff_hash: Sha256::new(),
            blob_size: 0,
        };
        gz.emit(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        gz
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).expect("write layer");
        self.blob_hash.update(bytes);
        self.blob_size += bytes.len() as u64;
    }

    fn write(&mut self, mut data: &[u8]) {
        self.diff_hash.update(data);
        for &b in data {
            self.crc = self.table[((self.crc ^ b as u32) & 0xff) as usize] ^ (self.crc >> 8);
        }
        self.len += data.len() as u64;
        while !data.is_empty() {
            let room = 65535 - self.pending.len();
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == 65535 {
                self.block(false);
            }
        }
    }

    fn block(&mut self, last: bool) {
        let pending = std::mem::take(&mut self.pending);
        let len = pending.len() as u16;
        let mut header = vec![u8::from(last)];
        header.extend_from_slice(&len.to_le_bytes());
        header.extend_from_slice(&(!len).to_le_bytes());
        self.emit(&header);
        self.emit(&pending);
        self.pending = pending;
        self.pending.clear();
    }

    fn finish(mut self) -> (Blob, String) {
        self.block(true);
        let crc = !self.crc;
        let mut trailer = crc.to_le_bytes().to_vec();
        trailer.extend_from_slice(&(self.len as u32).to_le_bytes());
        self.emit(&trailer);
        self.out.flush().expect("flush layer");
        let blob = Blob {
            digest: format!("sha256:{}", hex::encode(self.blob_hash.finalize())),
            size: self.blob_size,
        };
        (
            blob,
            format!("sha256:{}", hex::encode(self.diff_hash.finalize())),
        )
    }
}

fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// Deterministic pseudo-random bytes (xorshift), generated in pieces.
pub fn fill_pseudo_random(seed: u64, buf: &mut [u8], state: &mut u64) {
    if *state == 0 {
        *state = seed | 1;
    }
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// An OCI image layout directory being built.
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir: dir.to_owned(),
            refs: Vec::new(),
        }
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    pub fn add_bytes(&self, bytes: &[u8]) -> Blob {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        std::fs::write(self.blob_path(&digest), bytes).expect("write blob");
        Blob {
            digest,
            size: bytes.len() as u64,
        }
    }

    /// A gzip'd tar layer holding one file of `size` pseudo-random bytes,
    /// streamed to disk (never held in memory). Returns the blob and diff ID.
    pub fn add_layer(&self, seed: u64, size: u64) -> (Blob, String) {
        let tmp = self.dir.join(format!("layer-{seed}.tmp"));
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp).expect("layer file"));
        let mut gz = StoredGzip::new(file);
        gz.write(&tar_header(&format!("file-{seed}.bin"), size));
        let mut state = 0;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill_pseudo_random(seed, &mut buf[..n], &mut state);
            gz.write(&buf[..n]);
            left -= n as u64;
        }
        let padding = (512 - size % 512) % 512;
        gz.write(&vec![0u8; padding as usize + 1024]);
        let (blob, diff_id) = gz.finish();
        std::fs::rename(&tmp, self.blob_path(&blob.digest)).expect("rename layer");
        (blob, diff_id)
    }

    /// An image with one layer per `(seed, size)` for `arch`.
    pub fn image(&self, arch: &str, layers: &[(u64, u64)]) -> Built {
        let built: Vec<(Blob, String)> = layers
            .iter()
            .map(|&(seed, size)| self.add_layer(seed, size))
            .collect();
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {},
            "rootfs": { "type": "layers", "diff_ids": built.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>() },
        });
        let config = self.add_bytes(config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size },
            "layers": built.iter().map(|(b, _)| json!({
                "mediaType": OCI_LAYER_GZIP, "digest": b.digest, "size": b.size
            })).collect::<Vec<_>>(),
        });
        let blob = self.add_bytes(manifest.to_string().as_bytes());
        Built {
            media_type: OCI_MANIFEST,
            digest: blob.digest,
            size: blob.size,
            layers: built.into_iter().map(|(b, _)| b).collect(),
            config: Some(config),
        }
    }

    /// An image index of `images` (each built for its own architecture).
    pub fn index(&self, images: &[(&str, &Built)]) -> Built {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": images.iter().map(|(arch, b)| json!({
                "mediaType": b.media_type, "digest": b.digest, "size": b.size,
                "platform": { "architecture": arch, "os": "linux" }
            })).collect::<Vec<_>>(),
        });
        let blob = self.add_bytes(index.to_string().as_bytes());
        Built {
            media_type: OCI_INDEX,
            digest: blob.digest,
            size: blob.size,
            layers: images.iter().flat_map(|(_, b)| b.layers.clone()).collect(),
            config: None,
        }
    }

    /// Names `built` as `tag` in the layout's index.json.
    pub fn tag(&mut self, tag: &str, built: &Built) {
        self.refs.push(json!({
            "mediaType": built.media_type, "digest": built.digest, "size": built.size,
            "annotations": { "org.opencontainers.image.ref.name": tag }
        }));
        let index = json!({ "schemaVersion": 2, "manifests": self.refs });
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("index.json");
    }

    /// `skopeo copy oci:DIR:TAG docker://DEST` (plain HTTP, no TLS).
    pub fn push(&self, tag: &str, dest: &str, extra: &[&str]) {
        let mut command = Command::new(tool("skopeo"));
        command
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{tag}", self.dir.display()))
            .arg(format!("docker://{dest}"));
        let output = run(&mut command, Duration::from_secs(300));
        assert!(
            output.status.success(),
            "skopeo push to {dest} failed:\n{}",
            text(&output)
        );
    }
}
