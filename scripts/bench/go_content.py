#!/usr/bin/env python3
"""Writes a static GOPROXY tree for the Go benchmark: one module version with
its .info, .mod and a valid module zip (entries under module@version/), plus a
list file. Deterministic: the same bytes on every run.

usage: go_content.py ROOT MODULE VERSION ZIP_FILES FILE_SIZE
"""
import json
import os
import random
import sys
import zipfile

root, module, version = sys.argv[1], sys.argv[2], sys.argv[3]
files, size = int(sys.argv[4]), int(sys.argv[5])
base = os.path.join(root, module, "@v")
os.makedirs(base, exist_ok=True)
with open(os.path.join(base, "list"), "w") as f:
    f.write(version + "\n")
with open(os.path.join(base, version + ".info"), "w") as f:
    json.dump({"Version": version, "Time": "2026-01-02T03:04:05Z"}, f)
go_mod = f"module {module}\n\ngo 1.19\n"
with open(os.path.join(base, version + ".mod"), "w") as f:
    f.write(go_mod)
rng = random.Random(42)
prefix = f"{module}@{version}/"
with zipfile.ZipFile(os.path.join(base, version + ".zip"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr(prefix + "go.mod", go_mod)
    for i in range(files):
        # Source-like text: compresses about as well as real Go code does.
        words = [rng.choice(["func", "return", "if", "err", "nil", "package", "bench", "var", "x", "{", "}"])
                 for _ in range(size // 5)]
        z.writestr(f"{prefix}file{i}.go", "package bench\n\n" + " ".join(words) + "\n")
