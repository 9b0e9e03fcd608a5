#!/usr/bin/env python3
"""Compare two directory trees bit for bit and metadata for metadata.

    python3 scripts/compare-trees.py SOURCE RESTORED

Checks every entry: type, permission bits, owner, mtime (nanoseconds; not for the roots),
size, SHA-256 of file contents, symlink targets, and that empty directories exist. Prints
one line per difference and exits 1 if there is any, else prints a summary and exits 0.
"""
import hashlib
import os
import stat
import sys


def describe(root):
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + ([] if dirpath != root else [""]):
            path = os.path.join(dirpath, name) if name else root
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            info = {"type": {stat.S_IFDIR: "dir", stat.S_IFLNK: "link", stat.S_IFREG: "file"}.get(kind, "other"),
                    "uid": st.st_uid, "gid": st.st_gid}
            if kind != stat.S_IFLNK:
                info["mode"] = oct(stat.S_IMODE(st.st_mode))
            if rel != ".":
                info["mtime_ns"] = st.st_mtime_ns
            if kind == stat.S_IFLNK:
                info["target"] = os.readlink(path)
            elif kind == stat.S_IFREG:
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                info["size"] = st.st_size
                info["sha256"] = h.hexdigest()
            entries[rel] = info
    return entries


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = describe(sys.argv[1]), describe(sys.argv[2])
    problems = []
    for rel in sorted(set(a) | set(b)):
        if a.get(rel) != b.get(rel):
            problems.append(f"{rel}: {a.get(rel)} != {b.get(rel)}")
    for p in problems[:50]:
        print("DIFFERENT", p)
    if problems:
        print(f"{len(problems)} differences")
        sys.exit(1)
    files = sum(1 for e in a.values() if e["type"] == "file")
    size = sum(e.get("size", 0) for e in a.values())
    print(f"identical: {len(a)} entries, {files} files, {size} bytes, metadata included")


main()
