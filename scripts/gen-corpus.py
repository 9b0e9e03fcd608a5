#!/usr/bin/env python3
"""Deterministic test corpus for the backup benchmark (scripts/bench.sh).

Generate a corpus of about N MiB (the same seed always gives the same bytes):

    python3 scripts/gen-corpus.py DIR --size-mib N [--seed S]

  ~35%  text-like, compressible data: log lines, prose, JSON lines   (text/)
  ~25%  random, incompressible data                                   (random/)
  ~20%  near-duplicates: copies of text and random files with a few
        small insertions, overwrites and deletions in the middle      (dups/)
  ~10%  thousands of small files (1-64 KiB) in nested directories     (small/)
  ~10%  a few large files of tens of MiB (log, random, mixed)         (large/)

Edit an existing corpus in place, as a user would between two backups:

    python3 scripts/gen-corpus.py DIR --edit-percent 5 [--seed S]

  picks ~5% of the files (by count) and inserts or overwrites a few KiB in the middle of
  each; every other file stays untouched (content and timestamps).
"""

import argparse
import math
import os
import random
import sys
import time

KIB = 1024
MIB = 1024 * 1024
BLOCK = 4 * MIB  # generate and write in blocks of this size

SHARES = {"text": 0.35, "random": 0.25, "dups": 0.20, "small": 0.10, "large": 0.10}


# ---------------------------------------------------------------------------------------------
# Text generation: pools of pre-rendered lines, joined in random order (fast, compressible,
# and no two files share long runs of lines, so there is no accidental cross-file dedup).

SYLLABLES = ["ka", "lo", "mi", "ne", "ta", "ri", "so", "ve", "du", "pa", "xe", "bo", "che",
             "gra", "str", "on", "el", "ar", "in", "us", "or", "em", "ux", "qui", "fa", "zo"]
COMMON = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on",
          "be", "at", "by", "this", "from", "or", "an", "are", "not", "but", "which", "have",
          "request", "server", "workspace", "user", "error", "timeout", "connection", "backup",
          "restore", "pod", "volume", "database", "cluster", "namespace", "token", "session"]
LEVELS = ["INFO"] * 12 + ["DEBUG"] * 6 + ["WARN"] * 3 + ["ERROR"]
COMPONENTS = ["che-server", "postgres", "gateway", "dashboard", "devfile-registry", "operator",
              "plugin-registry", "workspace-controller", "keycloak", "traefik"]


class TextSource:
    def __init__(self, rng: random.Random):
        self.rng = rng
        vocab = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(3000)]
        weights = [1.0 / (i + 1) for i in range(len(vocab))]  # Zipf-like
        words = lambda k: rng.choices(vocab, weights=weights, k=k)
        common = lambda k: [rng.choice(COMMON) if rng.random() < 0.4 else w for w in words(k)]

        self.log_lines = []
        for _ in range(20000):
            msg = " ".join(common(rng.randint(4, 14)))
            extra = rng.choice(["", f" id={rng.getrandbits(64):016x}", f" took={rng.randint(1, 5000)}ms",
                                f" status={rng.choice([200, 201, 204, 301, 400, 403, 404, 500, 503])}",
                                f" user={rng.choice(vocab)}@example.com"])
            self.log_lines.append(f"{rng.choice(LEVELS):5} [{rng.choice(COMPONENTS)}] {msg}{extra}\n")

        self.prose_lines = []
        for _ in range(20000):
            sentence = " ".join(common(rng.randint(6, 18)))
            self.prose_lines.append(sentence[:1].upper() + sentence[1:] + rng.choice([". ", ".\n", ", ", "; ", ".\n\n"]))

        self.json_lines = []
        for _ in range(20000):
            tags = ", ".join(f'"{t}"' for t in rng.choices(vocab[:200], k=rng.randint(0, 4)))
            self.json_lines.append(
                f'"user": "{rng.choice(vocab)}", "event": "{rng.choice(COMMON[25:])}.{rng.choice(["create", "update", "delete", "get"])}", '
                f'"namespace": "{rng.choice(vocab[:50])}-che", "tags": [{tags}], '
                f'"value": {rng.uniform(0, 10000):.3f}, "ok": {rng.choice(["true", "true", "true", "false"])}}}\n')
        self.seq = 0
        self.clock = 1_700_000_000.0

    def block(self, kind: str, size: int) -> bytes:
        """About `size` bytes of text of the given kind (log, prose, json), cut to exactly `size`."""
        rng = self.rng
        out = []
        have = 0
        while have < size:
            n = max(16, (size - have) // 90 + 16)
            if kind == "log":
                lines = rng.choices(self.log_lines, k=n)
                base = self.clock
                step = rng.uniform(0.001, 0.2)
                rendered = []
                stamp = ""
                for i, line in enumerate(lines):
                    t = base + i * step
                    if i % 64 == 0:  # one strftime per 64 lines; milliseconds on every line
                        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
                    rendered.append(f"{stamp}.{int(t * 1000) % 1000:03d}Z {line}")
                self.clock = base + n * step
                chunk = "".join(rendered)
            elif kind == "json":
                lines = rng.choices(self.json_lines, k=n)
                s0 = self.seq
                chunk = "".join(f'{{"seq": {s0 + i}, {line}' for i, line in enumerate(lines))
                self.seq += n
            else:
                chunk = "".join(rng.choices(self.prose_lines, k=n))
            data = chunk.encode()
            out.append(data)
            have += len(data)
        return b"".join(out)[:size]


# ---------------------------------------------------------------------------------------------

def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def write_file(path: str, blocks) -> int:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    written = 0
    with open(path, "wb") as f:
        for b in blocks:
            f.write(b)
            written += len(b)
    return written


def random_blocks(rng: random.Random, size: int):
    while size > 0:
        n = min(size, BLOCK)
        yield rng.randbytes(n)
        size -= n


def text_blocks(text: TextSource, kind: str, size: int):
    while size > 0:
        n = min(size, BLOCK)
        yield text.block(kind, n)
        size -= n


def mixed_blocks(rng: random.Random, text: TextSource, size: int):
    """A disk-image-like mix: alternating runs of text and random data."""
    while size > 0:
        n = min(size, rng.choice([256 * KIB, 1 * MIB, 2 * MIB, BLOCK]))
        yield text.block(rng.choice(["log", "json", "prose"]), n) if rng.random() < 0.5 else rng.randbytes(n)
        size -= n


def fill(budget: int, lo: int, hi: int, rng: random.Random):
    """File sizes between lo and hi (log-uniform) adding up to budget exactly (the last one may be smaller)."""
    sizes = []
    while budget > 0:
        s = min(budget, log_uniform(rng, lo, hi))
        sizes.append(s)
        budget -= s
    return sizes


def edited_copy(data: bytes, rng: random.Random) -> bytes:
    """data with 1-3 small edits (insert, overwrite, delete of 16 B - 4 KiB) in its middle."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        n = rng.randint(16, 4 * KIB)
        pos = rng.randint(len(b) // 5, max(len(b) // 5, 4 * len(b) // 5))
        op = rng.choice(["insert", "overwrite", "delete"])
        if op == "insert":
            b[pos:pos] = rng.randbytes(n)
        elif op == "overwrite":
            b[pos:pos + n] = rng.randbytes(min(n, len(b) - pos))
        elif len(b) > 2 * n:
            del b[pos:pos + n]
    return bytes(b)


def generate(root: str, size_mib: int, seed: int) -> None:
    started = time.time()
    rng = random.Random(seed)
    text = TextSource(rng)
    total = size_mib * MIB
    budget = {k: int(total * v) for k, v in SHARES.items()}
    budget["large"] = total - sum(v for k, v in budget.items() if k != "large")
    os.makedirs(root, exist_ok=True)
    if os.listdir(root):
        sys.exit(f"gen-corpus: {root} is not empty")

    files = 0
    written = 0
    sources = []  # (path, size) of medium files that near-duplicates are copied from

    # Medium text files: logs, prose, JSON lines, 128 KiB - 8 MiB.
    kinds = [("log", "log"), ("prose", "txt"), ("json", "json")]
    for i, size in enumerate(fill(budget["text"], 128 * KIB, 8 * MIB, rng)):
        kind, ext = kinds[i % 3]
        path = os.path.join(root, "text", kind, f"batch-{i // 16:03d}", f"{kind}-{i:05d}.{ext}")
        written += write_file(path, text_blocks(text, kind, size))
        sources.append((path, size))
        files += 1

    # Medium random files (already compressed media, archives, encrypted blobs).
    exts = ["bin", "jpg", "gz", "zip", "enc"]
    for i, size in enumerate(fill(budget["random"], 128 * KIB, 8 * MIB, rng)):
        path = os.path.join(root, "random", f"set-{i // 16:03d}", f"blob-{i:05d}.{exts[i % len(exts)]}")
        written += write_file(path, random_blocks(rng, size))
        sources.append((path, size))
        files += 1

    # Near-duplicates of the medium files.
    dup_budget = budget["dups"]
    order = list(range(len(sources)))
    rng.shuffle(order)
    i = 0
    while dup_budget > 0 and sources:
        src, _ = sources[order[i % len(order)]]
        with open(src, "rb") as f:
            data = edited_copy(f.read(), rng)[:dup_budget]
        rel = os.path.relpath(src, root)
        path = os.path.join(root, "dups", f"copy-{i // len(order)}", rel)
        written += write_file(path, [data])
        dup_budget -= len(data)
        files += 1
        i += 1

    # Thousands of small files, 1-64 KiB, in nested directories.
    sizes = fill(budget["small"], 1 * KIB, 64 * KIB, rng)
    dirs = []
    for d in range(max(1, len(sizes) // 25)):
        depth = rng.randint(1, 4)
        parent = rng.choice(dirs) if dirs and depth > 1 else os.path.join(root, "small")
        dirs.append(os.path.join(parent, f"d{d:04d}"))
    small_exts = ["txt", "json", "yaml", "log", "md", "bin", "png", "dat"]
    for j, size in enumerate(sizes):
        ext = small_exts[j % len(small_exts)]
        path = os.path.join(rng.choice(dirs), f"f{j:06d}.{ext}")
        if ext in ("bin", "png", "dat"):
            data = rng.randbytes(size)
        else:
            data = text.block({"json": "json", "log": "log"}.get(ext, "prose"), size)
        written += write_file(path, [data])
        files += 1

    # A few large files: a log, a random blob, a mixed image.
    large = budget["large"]
    makers = [("server.log", lambda n: text_blocks(text, "log", n)),
              ("archive.bin", lambda n: random_blocks(rng, n)),
              ("volume.img", lambda n: mixed_blocks(rng, text, n))]
    for k, (name, make) in enumerate(makers):
        size = large // (len(makers) - k)
        large -= size
        written += write_file(os.path.join(root, "large", name), make(size))
        files += 1

    print(f"gen-corpus: {files} files, {written / MIB:.1f} MiB in {root} (seed {seed}) "
          f"in {time.time() - started:.1f}s")


def edit(root: str, percent: float, seed: int) -> None:
    rng = random.Random(seed)
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if os.path.isfile(p) and not os.path.islink(p):
                paths.append(p)
    if not paths:
        sys.exit(f"gen-corpus: no files in {root}")
    count = max(1, round(len(paths) * percent / 100))
    chosen = rng.sample(paths, count)
    text = TextSource(random.Random(seed ^ 0x5EED))
    inserts = overwrites = changed = 0
    for p in chosen:
        size = os.path.getsize(p)
        n = rng.randint(1 * KIB, 8 * KIB)
        pos = rng.randint(size // 4, max(size // 4, 3 * size // 4))
        payload = rng.randbytes(n) if p.endswith((".bin", ".jpg", ".gz", ".zip", ".enc", ".png", ".dat", ".img")) \
            else text.block("prose", n)
        with open(p, "r+b") as f:
            if rng.random() < 0.5:
                f.seek(pos)
                tail = f.read()
                f.seek(pos)
                f.write(payload)
                f.write(tail)
                inserts += 1
            else:
                f.seek(pos)
                f.write(payload[:max(1, size - pos)] if size > pos else payload)
                overwrites += 1
        changed += n
    print(f"gen-corpus: edited {count} of {len(paths)} files in {root} "
          f"({inserts} insertions, {overwrites} overwrites, {changed / KIB:.0f} KiB written)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--size-mib", type=int, help="generate a corpus of this many MiB into DIR (must be empty or absent)")
    ap.add_argument("--edit-percent", type=float, help="edit this percentage of the files in DIR in place")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = ap.parse_args()
    if (args.size_mib is None) == (args.edit_percent is None):
        ap.error("give exactly one of --size-mib and --edit-percent")
    if args.size_mib is not None:
        if args.size_mib < 1:
            ap.error("--size-mib must be at least 1")
        generate(args.dir, args.size_mib, args.seed)
    else:
        if not 0 < args.edit_percent <= 100:
            ap.error("--edit-percent must be in (0, 100]")
        edit(args.dir, args.edit_percent, args.seed)


if __name__ == "__main__":
    main()
