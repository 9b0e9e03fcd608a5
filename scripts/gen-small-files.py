#!/usr/bin/env python3
"""Deterministic corpus of many small files, like a workspace's node_modules and build trees
(scripts/bench-files.sh):

    python3 scripts/gen-small-files.py DIR --files N [--per-dir K] [--seed S]

N files of 0-16 KiB (uniform), half text-like (JavaScript/JSON-ish lines, compressible), half
random; in a deep tree: packages of 1-60 files in directories 3-9 levels deep, about 25 files a
directory, or of exactly K files with --per-dir K (K=1: every file in a directory of its own,
the case where the cost of a directory dominates). The same seed always gives the same names
and bytes.

    python3 scripts/gen-small-files.py DIR --touch-percent 1 [--seed S]

rewrites a few bytes in ~1% of the files (by count, spread over the tree) and moves their mtime,
as an `npm install` of a few packages would; every other file stays untouched.
"""

import argparse
import os
import random
import sys

WORDS = ("module exports require function return const let var this that value object array "
         "string number length index key map filter reduce promise async await import default "
         "node_modules package version dependencies license main scripts build test lib dist src").split()


def text_bytes(rng, size):
    out = bytearray()
    while len(out) < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        out += f"  {line}({rng.randint(0, 99999)});\n".encode()
    return bytes(out[:size])


def generate(root, files, seed, per_dir=None):
    rng = random.Random(seed)
    made = 0
    package = 0
    while made < files:
        depth = rng.randint(3, 9)
        parts = [f"d{rng.randint(0, 3 + level * 4)}" for level in range(depth - 1)] + [f"pkg{package}"]
        package += 1
        directory = os.path.join(root, *parts)
        os.makedirs(directory, exist_ok=True)
        for i in range(min(per_dir or rng.randint(1, 60), files - made)):
            size = rng.randint(0, 16 * 1024)
            data = text_bytes(rng, size) if rng.random() < 0.5 else rng.randbytes(size)
            with open(os.path.join(directory, f"f{i}.{'js' if i % 3 else 'json'}"), "wb") as f:
                f.write(data)
            made += 1
    return made


def touch(root, percent, seed):
    rng = random.Random(seed + 1)
    changed = 0
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            if rng.random() * 100 >= percent:
                continue
            path = os.path.join(directory, name)
            with open(path, "r+b") as f:
                data = f.read()
                f.seek(len(data) // 2)
                f.write(b"/* touched %d */" % rng.randint(0, 1 << 30))
            st = os.stat(path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            changed += 1
    return changed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--files", type=int)
    parser.add_argument("--per-dir", type=int, help="files in each package directory (default 1-60)")
    parser.add_argument("--touch-percent", type=float)
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
    if (opts.files is None) == (opts.touch_percent is None):
        parser.error("give one of --files N and --touch-percent P")
    if opts.files is not None:
        if opts.files < 1:
            parser.error("--files must be positive")
        if opts.per_dir is not None and opts.per_dir < 1:
            parser.error("--per-dir must be positive")
        print(f"{generate(opts.dir, opts.files, opts.seed, opts.per_dir)} files written under {opts.dir}")
    else:
        print(f"{touch(opts.dir, opts.touch_percent, opts.seed)} files touched under {opts.dir}")


if __name__ == "__main__":
    sys.exit(main())
