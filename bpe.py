"""Byte-level BPE tokenizer (CS336 assignment 1, section 2): train merges on a text file, encode and decode text.

$ python bpe.py train --input ../shared/fixtures/corpus.en --vocab_size 500 --special_tokens "<|endoftext|>" --out out/tok_corpus
$ python bpe.py train --input ../shared/data/tinystories_v2_sample.txt --vocab_size 10000 --special_tokens "<|endoftext|>" --out out/tokenizer
$ python bpe.py encode --tokenizer out/tokenizer "Once upon a time"
$ python bpe.py decode --tokenizer out/tokenizer 1 2 3

Library use:
    vocab, merges = train_bpe(path, vocab_size, ["<|endoftext|>"])   # vocab: id -> bytes, merges: [(bytes, bytes)]
    tok = Tokenizer(vocab, merges, ["<|endoftext|>"]); tok.save("out/tokenizer")
    tok = Tokenizer.load("out/tokenizer"); ids = tok.encode(text); text = tok.decode(ids)
Ids: 0..255 are the single bytes (id == byte value), then the special tokens in the order given, then one id per merge.
Files: GPT-2 style vocab.json + merges.txt (printable-byte `bytes_to_unicode` mapping) and special_tokens.json; they
load with Tokenizer.from_files and into HF tokenizers (models.BPE.from_file) with the same ids.

Knobs: train_bpe(num_workers=None: 1 process below 4 MB, else one per core; chunk_bytes=None: ~8 chunks per worker,
1-16 MB each; verbose=True: progress on stderr). Tokenizer.cache_size (entries per cache generation: at most twice that
are kept) and Tokenizer.buffer_chars (encode_iterable's buffer) bound the encoder's memory.
"""
import argparse
import hashlib
import heapq
import json
import os
import re
import resource
import sys
import time
import warnings
from collections import Counter, defaultdict
from contextlib import nullcontext
from itertools import chain, islice, repeat
from multiprocessing import Pool

import regex

# GPT-2 pre-tokenizer (handout 2.4, the non-possessive form): contractions, letter runs, digit runs, symbol runs, each
# with an optional leading space; then whitespace runs, where `\s+(?!\S)` leaves the last space to the next word.
GPT2_PAT = regex.compile(r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
# The same pattern for pure-ASCII text in stdlib re, whose calls cost a third of regex's on short strings (the encoder's
# cache misses). In ASCII, \p{L} is [A-Za-z] and \p{N} is [0-9]; \s is spelled out because re's \s also matches
# \x1c-\x1f and regex's does not (tests/test_bpe.py checks that the two patterns agree).
GPT2_ASCII = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^\t\n\v\f\r A-Za-z0-9]+"""
                        r"""|[\t\n\v\f\r ]+(?![^\t\n\v\f\r ])|[\t\n\v\f\r ]+""")


def special_pattern(special_tokens):
    """Regex matching any special token, longest first so "<|eot|><|eot|>" beats "<|eot|>" when both are given.
    The capture group makes re.split keep the special tokens (at odd indices)."""
    return regex.compile("(" + "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True)) + ")")


def pretokenize(text, special_re=None):
    """Pre-tokens of text; with special_re, the text is split on special tokens first and they are kept as items."""
    if special_re is None:
        return GPT2_PAT.findall(text)
    words = []
    for i, part in enumerate(special_re.split(text)):  # a pre-token never runs across a special token
        if i % 2:  # the capture group puts the special tokens at odd indices
            words.append(part)
        else:
            words += GPT2_PAT.findall(part)
    return words


# Speed trick for training and encoding (exact, not an approximation): a space followed by a non-space always starts a
# new pre-token, whatever comes before it (a whitespace run gives its last space to the next word: `\s+(?!\S)`). So the
# text can be cut before every such space and each piece (" word,") pre-tokenized on its own. Pieces repeat far more
# than text does, so we count or cache whole pieces and run the regex once per distinct piece, not once per piece.
# Spaces that are not safe cuts are hidden as HIDE during the str.split(" "): those before whitespace or at the end,
# and those before a special token (the regex sees the text up to the special token: "\n <|eot|>" ends in "\n ").
HIDE = "\x00"
SPACE_AFTER_NONSPACE = regex.compile(r"(?r)\S\s")  # for encode_iterable; (?r) searches from the end


def unsafe_space_pattern(special_tokens):
    """Regex for the spaces that are not safe cuts; None if a special token holds a space (then we never cut)."""
    if any(" " in s for s in special_tokens):
        return None
    # stdlib re is faster here, and its \s is a superset of regex's \s (0x1c-0x1f too), so it never hides too little
    return re.compile(r" (?=\s|\Z" + "".join("|" + re.escape(s) for s in special_tokens) + ")")


def split_fragments(text, unsafe_space):
    """[f0, f1, ...] with text == f0 + " " + f1 + " " + ..., cut only where safe (None: don't cut this text).
    The pieces are f0 and " " + f_i (HIDE -> " "); for i > 0 f_i is never empty and starts with a non-space."""
    return None if unsafe_space is None or HIDE in text else unsafe_space.sub(HIDE, text).split(" ")


def pretokenize_fragments(frags, special_re=None):
    """For each fragment f (never a text's first), yield (f, pre-tokens of " " + f), all from a single regex pass."""
    words = iter(pretokenize((" " + " ".join(frags)).replace(HIDE, " "), special_re))
    for f in frags:  # the pieces' pre-tokens come in order: take them until their lengths add up to the piece's
        n, piece_words = len(f) + 1, []
        while n:
            piece_words.append(next(words))
            n -= len(piece_words[-1])
        yield f, piece_words


TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens.json")  # what Tokenizer.save writes into a directory


def bytes_to_unicode():
    """GPT-2's byte -> printable character table, used by vocab.json/merges.txt (no spaces or control chars)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:  # unprintable bytes get shifted into 256+
            table[b], n = chr(256 + n), n + 1
    return table


# ----------------------------------------------------------------------------------------------------------------------
# Training, step 1: count pre-tokens, in parallel over chunks of the file


def find_chunks(path, special_tokens, chunk_bytes):
    """Byte ranges of about chunk_bytes each. A chunk ends right before a special token (or, with no special tokens,
    between a non-space ASCII byte and an ASCII space), so no pre-token and no UTF-8 character spans two chunks."""
    size = os.path.getsize(path)
    if special_tokens:
        boundary = regex.compile(b"|".join(regex.escape(s.encode()) for s in special_tokens))
    else:  # subtle: a pre-token never holds a non-space char followed by a space, so this cut changes nothing
        boundary = regex.compile(rb"(?<=[\x21-\x7e])[ \t\n\r\f\v]")
    overlap = max([len(s.encode()) for s in special_tokens] + [2])
    bounds, block = [0], 1 << 20
    with open(path, "rb") as f:
        while bounds[-1] < size:
            pos, cut = bounds[-1] + chunk_bytes, size
            while pos < size:  # read forward block by block until the next boundary
                f.seek(pos)
                data = f.read(block)
                m = boundary.search(data)
                if m:
                    cut = pos + m.start()
                    break
                if len(data) < block:
                    break
                pos += block - overlap  # overlap so a token straddling two blocks is still found
            bounds.append(cut)
    return list(zip(bounds[:-1], bounds[1:]))


def count_pretokens(job):
    """Worker: Counter of pre-token strings in one byte range of the file (special tokens removed, never merged)."""
    path, start, end, special_tokens = job
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {start + e.start}): convert it first") from None
    special_re = special_pattern(special_tokens) if special_tokens else None
    frags = split_fragments(text, unsafe_space_pattern(special_tokens))
    if frags is None:  # rare fallback: the plain regex over the whole text
        counts = Counter(pretokenize(text, special_re))
    else:  # count the distinct fragments, then pre-tokenize each once; the first fragment has no leading space
        counts = Counter(pretokenize(frags[0].replace(HIDE, " "), special_re))  # pre-token -> count
        frag_counts = Counter(islice(frags, 1, None))
        for f, words in pretokenize_fragments(list(frag_counts), special_re):
            for word in words:
                counts[word] += frag_counts[f]
    for s in special_tokens:
        counts.pop(s, None)
    return counts


def count_file(path, special_tokens, num_workers=None, chunk_bytes=None, verbose=False):
    """Counter of pre-tokens over the whole file. Workers stream one Counter per chunk back, so memory holds only the
    table of unique pre-tokens plus a chunk per worker, whatever the file size. Small files stay in this process."""
    size = os.path.getsize(path)
    if num_workers is None:  # processes cost ~0.1 s to start: not worth it for a few MB
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        num_workers = 1 if size < 4 << 20 else cores
    if chunk_bytes is None:  # ~8 chunks per worker balance the load; 1-16 MB keeps per-chunk overhead and memory small
        chunk_bytes = min(max(size // (8 * num_workers), 1 << 20), 1 << 24)
    jobs = [(path, s, e, special_tokens) for s, e in find_chunks(path, special_tokens, chunk_bytes)]
    total, t0, shown = Counter(), time.time(), time.time()
    with Pool(num_workers) if num_workers > 1 else nullcontext() as pool:
        for k, counts in enumerate(pool.imap_unordered(count_pretokens, jobs) if pool else map(count_pretokens, jobs)):
            total.update(counts)
            if verbose and time.time() - shown > 1:
                shown, rate = time.time(), (k + 1) / len(jobs) * size / 1e6 / (time.time() - t0)
                print(f"pre-tokenizing: chunk {k + 1}/{len(jobs)} ({rate:.1f} MB/s, {num_workers} processes)",
                      file=sys.stderr)
    return total


# ----------------------------------------------------------------------------------------------------------------------
# Training, step 2: merge the most frequent pair, updating only the words that contain it


def train_bpe(input_path, vocab_size, special_tokens, num_workers=None, verbose=True, chunk_bytes=None):
    """Train a byte-level BPE tokenizer on a UTF-8 text file. Returns (vocab: id -> bytes, merges: [(bytes, bytes)]).

    Each step merges the most frequent adjacent pair of tokens, counted over pre-tokens weighted by frequency.
    Ties go to the lexicographically greater pair compared as **bytes** tuples (a, b), as the CS336 reference does
    (comparing ids or GPT-2 display strings instead diverges from the reference at merge 92 of corpus.en).
    Stops early, with a warning, if the corpus runs out of pairs before vocab_size.
    num_workers: processes for pre-tokenization (None: 1 for small files, else all cores).
    """
    special_tokens = list(special_tokens or [])
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"training file not found: {input_path} (pass an existing UTF-8 text file)")
    if not os.access(input_path, os.R_OK):
        raise PermissionError(f"training file not readable: {input_path} (check its permissions)")
    dups = sorted({s for s in special_tokens if special_tokens.count(s) > 1})
    if dups or "" in special_tokens:
        raise ValueError(f"special tokens must be distinct and non-empty, got {special_tokens}: list each one once")
    if vocab_size < 256 + len(special_tokens):
        raise ValueError(f"vocab_size={vocab_size} is too small: it must be at least 256 bytes + "
                         f"{len(special_tokens)} special tokens = {256 + len(special_tokens)}")
    t0 = time.time()
    counts = count_file(input_path, special_tokens, num_workers, chunk_bytes, verbose)
    if not counts:
        raise ValueError(f"{input_path} holds no text outside special tokens: nothing to train on")
    if verbose:
        print(f"pre-tokenized {input_path}: {len(counts):,} unique pre-tokens in {time.time() - t0:.2f}s", file=sys.stderr)

    vocab = {i: bytes([i]) for i in range(256)}  # id -> bytes
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    # Words are lists of token ids with a frequency; one-byte words have no pairs and never change.
    encoded = [(w.encode("utf-8"), c) for w, c in counts.items()]
    del counts
    words = [list(w) for w, c in encoded if len(w) > 1]
    freqs = [c for w, c in encoded if len(w) > 1]
    pair_counts = defaultdict(int)  # (id, id) -> count, over all words
    where = defaultdict(set)  # (id, id) -> indices of words that contain it (may be stale: checked on use)
    for j, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += freqs[j]
            where[pair].add(j)

    # subtle: heapq is a min-heap, so the key is (-count, inverted bytes of a, inverted bytes of b). Inverting each byte
    # (255 - x) reverses the order, and the end marker 256 makes a prefix sort after the longer token.
    inv = [tuple(255 - x for x in vocab[i]) + (256,) for i in range(len(vocab))]  # id -> inverted key
    heap = [(-c, inv[a], inv[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    merges, n_merges, t1, shown = [], vocab_size - len(vocab), time.time(), time.time()
    while len(merges) < n_merges:
        # Lazy heap: a pair that grew got a new entry; one that shrank still has its old, too-high entry, which is
        # re-pushed with the current count when it reaches the top. So the first up-to-date entry is the best pair.
        while heap:
            neg, _, _, a, b = heapq.heappop(heap)
            count = pair_counts.get((a, b), 0)
            if count == -neg:
                break
            if 0 < count < -neg:
                heapq.heappush(heap, (-count, inv[a], inv[b], a, b))
        else:
            warnings.warn(f"the corpus ran out of pairs after {len(merges)} merges: returning a vocab of "
                          f"{len(vocab)} tokens instead of {vocab_size}")
            break
        new = len(vocab)
        vocab[new] = vocab[a] + vocab[b]
        inv.append(inv[a][:-1] + inv[b])
        merges.append((vocab[a], vocab[b]))
        for pair in merge_pair(a, b, new, words, freqs, pair_counts, where):
            heapq.heappush(heap, (-pair_counts[pair], inv[pair[0]], inv[pair[1]], *pair))
        if verbose and (time.time() - shown > 1 or len(merges) == n_merges):
            shown, rate = time.time(), len(merges) / max(time.time() - t1, 1e-9)
            print(f"merges {len(merges)}/{n_merges} ({rate:,.0f} merges/s, ETA {(n_merges - len(merges)) / rate:.1f}s)",
                  file=sys.stderr)
    return vocab, merges


def merge_pair(a, b, new, words, freqs, pair_counts, where):
    """Replace every (a, b) by `new` in the words that hold it, in place, updating the counts of the neighbour pairs
    only. Returns the pairs that grew (they all hold `new`); the heap fixes the ones that shrank lazily."""
    grown = set()
    for j in where.pop((a, b)):  # may list words that lost the pair since: the scan then finds nothing
        w, f = words[j], freqs[j]
        i, last, todo = -1, -2, w.count(a)  # last: where the previous merge was; todo: a's not looked at yet
        while todo:
            i = w.index(a, i + 1)
            todo -= 1
            if i + 1 == len(w) or w[i + 1] != b:
                continue
            todo -= a == b  # with a pair (x, x) the b merged away was an a too
            w[i] = new
            del w[i + 1]
            if i > 0:  # left neighbour x: (x, a) -> (x, new); right after a merge ("a a a a") x is new, and was b
                old, left = (b if last == i - 1 else w[i - 1], a), (w[i - 1], new)
                pair_counts[old] -= f
                pair_counts[left] += f
                where[left].add(j)
                grown.add(left)
            # right neighbour y: (b, y) -> (new, y), unless y starts the next occurrence (its left step handles it)
            if i + 1 < len(w) and not (w[i + 1] == a and i + 2 < len(w) and w[i + 2] == b):
                y = w[i + 1]
                pair_counts[b, y] -= f
                pair_counts[new, y] += f
                where[new, y].add(j)
                grown.add((new, y))
            last = i
    del pair_counts[a, b]  # every occurrence was merged
    return grown


# ----------------------------------------------------------------------------------------------------------------------
# The tokenizer: encode with the merges, decode by joining bytes


class Cache(dict):
    """A dict that fills itself: cache[key] for a missing key stores and returns compute(key). A hit is a plain dict
    lookup, so map(cache.__getitem__, keys) stays in C until a key is new. Bounded: once owner.cache_size entries are
    held, they become the old generation, which a miss checks before computing, so the entries in use survive the reset
    (like an LRU cache, with no bookkeeping on hits). Holds at most 2 * owner.cache_size entries."""

    def __init__(self, owner, compute):
        self.owner, self.compute, self.old = owner, compute, {}

    def __missing__(self, key):
        value = self.old.get(key)
        if value is None:
            value = self.compute(key)
        if len(self) >= self.owner.cache_size:
            self.old = self.copy()
            self.clear()
        self[key] = value
        return value


class Tokenizer:
    cache_size = 1 << 16  # entries per cache generation (fragments, pre-tokens): bounds memory on huge inputs
    buffer_chars = 1 << 16  # encode_iterable encodes the text in pieces of about this size

    def __init__(self, vocab, merges, special_tokens=None):
        self.vocab = dict(vocab)  # id -> bytes
        self.merges = list(merges)  # [(bytes, bytes)] in merge order
        self.special_tokens = list(dict.fromkeys(special_tokens or []))
        if "" in self.special_tokens:
            raise ValueError("a special token is the empty string: remove it from special_tokens")
        ids = {t: i for i, t in self.vocab.items()}  # bytes -> id
        for t in (s.encode("utf-8") for s in self.special_tokens):  # a special token missing from the vocab is appended
            if t not in ids:
                ids[t] = max(self.vocab, default=-1) + 1
                self.vocab[ids[t]] = t
        self.special_ids = {s: ids[s.encode("utf-8")] for s in self.special_tokens}  # str -> id
        self.eot_id = self.special_ids.get("<|endoftext|>")
        missing = [x for x in range(256) if bytes([x]) not in ids]
        if missing:
            raise ValueError(f"vocab lacks single-byte tokens {missing[:5]}...: a byte-level vocab needs all 256 bytes")
        self.byte_ids = [ids[bytes([x])] for x in range(256)]  # byte value -> id
        self.ranks, self.merged = {}, []  # (id, id) -> merge rank; merge rank -> merged id
        for r, (x, y) in enumerate(self.merges):
            if x not in ids or y not in ids or x + y not in ids:
                raise ValueError(f"merge {r} {(x, y)} uses a token missing from the vocab: vocab and merges don't match")
            self.ranks.setdefault((ids[x], ids[y]), r)
            self.merged.append(ids[x + y])
        self.token_ids = ids
        self.special_re = special_pattern(self.special_tokens) if self.special_tokens else None
        self.unsafe_space = unsafe_space_pattern(self.special_tokens)
        self.cache = Cache(self, self.piece_ids)  # fragment -> ids of the piece " " + fragment
        self.word_cache = Cache(self, self.word_ids)  # pre-token or special token -> ids

    @property
    def vocab_size(self):
        return len(self.vocab)

    def bpe(self, word):
        """Ids of one pre-token: start from its bytes, merge the lowest-rank pair (leftmost on ties) until none is left."""
        data = word.encode("utf-8")
        if data in self.token_ids:  # fast path (as tiktoken does): the pre-token is itself a token
            return (self.token_ids[data],)
        ids = list(map(self.byte_ids.__getitem__, data))
        rank_of, no_merge = self.ranks.get, len(self.merged)
        ranks = list(map(rank_of, zip(ids, ids[1:]), repeat(no_merge)))  # ranks[i]: rank of (ids[i], ids[i+1])
        while ranks:
            r = min(ranks)
            if r == no_merge:
                break
            i = ranks.index(r)
            ids[i] = self.merged[r]
            del ids[i + 1], ranks[i]  # only the two pairs next to the merge change
            if i > 0:
                ranks[i - 1] = rank_of((ids[i - 1], ids[i]), no_merge)
            if i < len(ranks):
                ranks[i] = rank_of((ids[i], ids[i + 1]), no_merge)
        return tuple(ids)

    def word_ids(self, word):
        """Ids of one pre-token or special token (word_cache calls this on a miss)."""
        return (self.special_ids[word],) if word in self.special_ids else self.bpe(word)

    def piece_ids(self, frag):
        """Ids of the piece " " + frag (HIDE -> " "), from its pre-tokens' ids (cache calls this on a miss)."""
        piece = " " + frag.replace(HIDE, " ")
        if piece.isascii() and (self.special_re is None or not self.special_re.search(piece)):
            words = GPT2_ASCII.findall(piece)  # most pieces: same pre-tokens as pretokenize, 3x cheaper
        else:
            words = pretokenize(piece, self.special_re)
        ids = ()
        for word in words:
            ids += self.word_cache[word]
        return ids

    def encode(self, text):
        """Text -> list of token ids. Special tokens (longest first) become their ids and are never merged."""
        frags = split_fragments(text, self.unsafe_space)
        if frags is None:  # rare fallback: look every pre-token up
            return list(chain.from_iterable(map(self.word_cache.__getitem__, pretokenize(text, self.special_re))))
        # The first fragment has no space in front; every other one is the piece " " + fragment. Most pieces are
        # known, so the lookups run in C; a new piece is pre-tokenized and merged once (Cache.__missing__).
        first = pretokenize(frags[0].replace(HIDE, " "), self.special_re)
        ids = list(chain.from_iterable(map(self.word_cache.__getitem__, first)))
        ids += chain.from_iterable(map(self.cache.__getitem__, islice(frags, 1, None)))
        return ids

    def encode_iterable(self, iterable):
        """Lazily encode an iterable of strings (e.g. a file's lines) with a bounded buffer. Yields exactly the ids of
        encode("".join(iterable)): the text is cut only where a cut cannot change the result."""
        buf, limit = "", self.buffer_chars
        for chunk in iterable:
            buf += chunk
            if len(buf) >= limit:
                cut = self.safe_cut(buf)
                yield from self.encode(buf[:cut])
                buf = buf[cut:]
                limit = max(self.buffer_chars, 2 * len(buf))  # no cut found yet: wait for more text, don't rescan
        yield from self.encode(buf)

    def safe_cut(self, buf):
        """A position k where encode(buf[:k]) + encode(rest) == encode(buf + rest) for any rest; 0 if none is known."""
        longest = max((len(s) for s in self.special_tokens), default=1)
        # subtle: no pre-token holds a non-space char followed by a space, so the text splits between them. Searched
        # backwards, and early enough that any special token starting before the cut lies wholly inside buf.
        m = SPACE_AFTER_NONSPACE.search(buf, 0, max(len(buf) - longest + 1, 0))
        k = m.start() + 1 if m else 0
        if self.special_re is not None:  # a special token straddling k (one holding a space) moves the cut to its start
            for m in self.special_re.finditer(buf, 0, min(len(buf), k + longest)):
                if m.start() < k < m.end():
                    k = m.start()
        return k

    def decode(self, ids):
        """List of ids -> text. Bytes that are not valid UTF-8 become U+FFFD (a partial character never raises)."""
        try:
            data = b"".join(map(self.vocab.__getitem__, ids))
        except KeyError as e:
            raise ValueError(f"unknown token id {e.args[0]!r}: valid ids are 0..{max(self.vocab)}") from None
        return data.decode("utf-8", errors="replace")

    # ---- files: GPT-2 style vocab.json + merges.txt, plus special_tokens.json

    @classmethod
    def from_files(cls, vocab_path, merges_path, special_tokens=None):
        decoder = {c: b for b, c in bytes_to_unicode().items()}  # printable char -> byte
        to_bytes = lambda s: bytes(decoder[c] for c in s) if all(c in decoder for c in s) else s.encode("utf-8")
        with open(vocab_path, encoding="utf-8") as f:
            vocab = {i: to_bytes(s) for s, i in json.load(f).items()}
        merges = []
        with open(merges_path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#version") or not line.strip():
                    continue
                x, y = line.split()  # the printable mapping has no whitespace, so a space separates the pair
                merges.append((to_bytes(x), to_bytes(y)))
        return cls(vocab, merges, special_tokens)

    @classmethod
    def load(cls, tokenizer_dir):
        for name in TOKENIZER_FILES:
            if not os.path.isfile(os.path.join(tokenizer_dir, name)):
                raise FileNotFoundError(f"{os.path.join(tokenizer_dir, name)} not found: train a tokenizer first with "
                                        f"`python bpe.py train --input FILE --vocab_size N --out {tokenizer_dir}`")
        with open(os.path.join(tokenizer_dir, "special_tokens.json"), encoding="utf-8") as f:
            special_tokens = json.load(f)
        return cls.from_files(os.path.join(tokenizer_dir, "vocab.json"), os.path.join(tokenizer_dir, "merges.txt"),
                              special_tokens)

    def save(self, out_dir):
        os.makedirs(out_dir, exist_ok=True)
        enc = bytes_to_unicode()
        to_str = lambda t: "".join(enc[x] for x in t)
        with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump({to_str(t): i for i, t in sorted(self.vocab.items())}, f, ensure_ascii=False, indent=0)
        with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join(f"{to_str(x)} {to_str(y)}\n" for x, y in self.merges))
        with open(os.path.join(out_dir, "special_tokens.json"), "w", encoding="utf-8") as f:
            json.dump(self.special_tokens, f)


def tokenizer_hash(tokenizer_dir):
    """sha256 (first 16 hex chars) of vocab.json + merges.txt + special_tokens.json: names a tokenizer in .bin sidecars."""
    h = hashlib.sha256()
    for name in TOKENIZER_FILES:
        with open(os.path.join(tokenizer_dir, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a byte-level BPE tokenizer, or encode/decode with one.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train on a text file and save vocab.json, merges.txt, special_tokens.json")
    p.add_argument("--input", required=True, help="UTF-8 text file")
    p.add_argument("--vocab_size", type=int, required=True, help="total tokens: 256 bytes + specials + merges")
    p.add_argument("--special_tokens", nargs="*", default=["<|endoftext|>"], help="e.g. '<|endoftext|>'")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num_workers", type=int, default=None, help="pre-tokenization processes (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p = sub.add_parser("encode", help="print the ids of a string")
    p.add_argument("--tokenizer", required=True, help="directory written by `train`")
    p.add_argument("text")
    p = sub.add_parser("decode", help="print the text of a list of ids")
    p.add_argument("--tokenizer", required=True, help="directory written by `train`")
    p.add_argument("ids", type=int, nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            if os.path.exists(args.out) and not os.path.isdir(args.out):  # fail now, not after the training
                raise ValueError(f"--out {args.out} is a file: pass a directory for vocab.json and merges.txt")
            t0 = time.time()
            vocab, merges = train_bpe(args.input, args.vocab_size, args.special_tokens, args.num_workers,
                                      verbose=not args.quiet)
            Tokenizer(vocab, merges, args.special_tokens).save(args.out)
            rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
            longest = max((a + b for a, b in merges), key=len, default=b"")  # learned tokens, not the specials
            print(f"trained {len(vocab)} tokens ({len(merges)} merges) in {time.time() - t0:.2f}s, peak RSS "
                  f"{rss / 1024:.0f} MB, longest token {len(longest)} bytes: {longest.decode('utf-8', 'replace')!r}")
            print(f"saved to {args.out}/ (hash {tokenizer_hash(args.out)})")
        elif args.command == "encode":
            print(" ".join(map(str, Tokenizer.load(args.tokenizer).encode(args.text))))
        else:
            print(Tokenizer.load(args.tokenizer).decode(args.ids))
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
