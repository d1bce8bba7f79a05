"""Tests for bpe.py: reference merges, fast trainer == simple trainer, tiktoken equality, round trips, streaming, errors.

$ python -m pytest -q tests/test_bpe.py
"""
import json
import pickle
import random
import subprocess
import sys
import textwrap
from collections import Counter
from itertools import chain
from pathlib import Path

import pytest
import regex

import bpe
from bpe import GPT2_PAT, Tokenizer, bytes_to_unicode, pretokenize, tokenizer_hash, train_bpe
from conftest import shared_path

ROOT = Path(__file__).resolve().parent.parent
EOT = "<|endoftext|>"


def reference_train(path, vocab_size, special_tokens):
    """The obviously-correct trainer (CS336 semantics): recount every pair after every merge. Slow, for small corpora."""
    text = Path(path).read_bytes().decode("utf-8")  # bytes as they are: "\r\n" stays "\r\n"
    docs = regex.split("|".join(map(regex.escape, special_tokens)), text) if special_tokens else [text]
    counts = Counter(w for doc in docs for w in GPT2_PAT.findall(doc))
    words = {tuple(bytes([x]) for x in w.encode("utf-8")): c for w, c in counts.items()}  # bytes tuple -> count
    vocab = [bytes([i]) for i in range(256)] + [s.encode("utf-8") for s in special_tokens]
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for pair in zip(w, w[1:]):
                pairs[pair] += c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))  # most frequent, ties -> greater (bytes, bytes)
        merges.append(best)
        vocab.append(best[0] + best[1])
        merged = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += c
        words = merged
    return vocab, merges


def gpt2_bytes(s, decoder={c: b for b, c in bytes_to_unicode().items()}):
    return bytes(decoder[c] for c in s)


def tiktoken_from_vocab(vocab, special_ids):
    """A tiktoken Encoding with the same tokens: ranks = ids (our ids are in merge order), same GPT-2 pattern."""
    tiktoken = pytest.importorskip("tiktoken")
    special_values = {s.encode("utf-8") for s in special_ids}
    ranks = {t: i for i, t in vocab.items() if t not in special_values}
    return tiktoken.Encoding("test", pat_str=GPT2_PAT.pattern, mergeable_ranks=ranks, special_tokens=special_ids)


def random_text(rng, n_words, alphabet="abcde", specials=()):
    """Words from a tiny alphabet (lots of repeats and 'aaaa' overlaps), odd whitespace, punctuation, specials."""
    seps = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n ", ", ", ". ", "'s ", "'ll ", " 12 ", " \u00e9\u00e8 ", " \U0001F643 "]
    parts = []
    for _ in range(n_words):
        parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))))
        parts.append(rng.choice(seps))
        if specials and rng.random() < 0.05:
            parts.append(rng.choice(specials))
    return "".join(parts)


def fuzz_text(rng, n, specials=()):
    """Random strings over characters that stress the pre-tokenizer: all kinds of whitespace, \\x00, \\x1c, letters,
    digits, apostrophes, emoji, and special tokens."""
    atoms = [" ", " ", "  ", "\n", "\r\n", "\t", "\x0b", "\x1c", "\xa0", "\u3000", "\x00", "a", "b", "ab", "Z", "é",
             "1", "23", "'", "'s", "'ll", "!", ".", ",", "-", "\U0001F643", "\u4e2d", *specials]
    return "".join(rng.choice(atoms) for _ in range(n))


@pytest.fixture(scope="module")
def gpt2():
    vocab, merges = shared_path("fixtures/gpt2_vocab.json"), shared_path("fixtures/gpt2_merges.txt")
    return Tokenizer.from_files(vocab, merges, [EOT])


@pytest.fixture(scope="module")
def gpt2_tiktoken():
    tiktoken = pytest.importorskip("tiktoken")
    vocab = json.loads(shared_path("fixtures/gpt2_vocab.json").read_text(encoding="utf-8"))
    ranks = {gpt2_bytes(s): i for s, i in vocab.items() if s != EOT}
    return tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PAT.pattern, mergeable_ranks=ranks,
                             special_tokens={EOT: 50256})


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A tokenizer trained here on generated text (no ../shared needed), with its tiktoken twin."""
    path = tmp_path_factory.mktemp("own") / "train.txt"
    path.write_text(random_text(random.Random(0), 20000, alphabet="abcdefghijklmnop\u00e9", specials=[EOT]),
                    encoding="utf-8")
    vocab, merges = train_bpe(path, 600, [EOT], verbose=False)
    return Tokenizer(vocab, merges, [EOT]), tiktoken_from_vocab(vocab, {EOT: 256})


# ---------------------------------------------------------------------------------------------------------------------
# training


def test_train_matches_cs336_reference():
    vocab, merges = train_bpe(shared_path("fixtures/corpus.en"), 500, [EOT], verbose=False)
    lines = shared_path("fixtures/train-bpe-reference-merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges == [tuple(gpt2_bytes(s) for s in line.split(" ")) for line in lines]
    assert len(merges) == 243
    ref_vocab = json.loads(shared_path("fixtures/train-bpe-reference-vocab.json").read_text(encoding="utf-8"))
    assert set(vocab.values()) == {gpt2_bytes(s) if s != EOT else s.encode() for s in ref_vocab}
    # id layout: bytes, then the special token, then merges in order
    assert vocab[97] == b"a" and vocab[256] == EOT.encode() and vocab[257] == merges[0][0] + merges[0][1]


CORPORA = {  # name -> (text maker, vocab_size, special tokens)
    "tiny_alphabet_overlaps": (lambda: random_text(random.Random(1), 3000, alphabet="ab"), 400, []),
    "aaaa_runs": (lambda: " ".join("a" * random.Random(i).randint(1, 12) for i in range(2000)), 270, []),
    "unicode_and_specials": (lambda: random_text(random.Random(2), 3000, "xyz\u00e9\u4e2d", [EOT, "<pad>"]), 420,
                             [EOT, "<pad>"]),
    "fuzz": (lambda: fuzz_text(random.Random(3), 6000), 330, []),
}


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_fast_trainer_matches_simple_trainer(tmp_path, name):
    make, vocab_size, specials = CORPORA[name]
    path = tmp_path / "corpus.txt"
    path.write_text(make(), encoding="utf-8")
    vocab, merges = train_bpe(path, vocab_size, specials, verbose=False)
    ref_vocab, ref_merges = reference_train(path, vocab_size, specials)
    assert merges == ref_merges
    assert [vocab[i] for i in range(len(vocab))] == ref_vocab


@pytest.mark.parametrize("rel", ["data/tinystories_v2_train_10docs.txt", "fixtures/german.txt"])
def test_fast_trainer_matches_simple_trainer_real_text(rel):
    path = shared_path(rel)
    vocab, merges = train_bpe(path, 360, [EOT], verbose=False)
    ref_vocab, ref_merges = reference_train(path, 360, [EOT])
    assert merges == ref_merges and list(vocab.values()) == ref_vocab


@pytest.mark.parametrize("rel,specials", [("data/owt_valid_10docs.txt", [EOT]), ("data/tinyshakespeare.txt", [])])
def test_parallel_pretokenization_equals_single_process(tmp_path, rel, specials):
    path = tmp_path / "head.txt"  # the first 200 KB keep the test quick
    path.write_bytes(shared_path(rel).read_bytes()[:200_000].rsplit(b"\n", 1)[0])
    chunks = bpe.find_chunks(path, specials, 1 << 12)
    assert len(chunks) >= 4 and chunks[0][0] == 0 and chunks[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))  # contiguous, no gaps
    data = path.read_bytes()
    for start, _ in chunks[1:]:  # each chunk starts at a special token, or at an ASCII space after a non-space
        assert data[start:].startswith(EOT.encode()) if specials else data[start] in b" \t\n\r\f\v"
    single = bpe.count_file(path, specials, num_workers=1)
    parallel = bpe.count_file(path, specials, num_workers=2, chunk_bytes=1 << 12)
    assert single == parallel
    text = path.read_text(encoding="utf-8")
    docs = text.split(EOT) if specials else [text]
    assert single == Counter(w for d in docs for w in GPT2_PAT.findall(d))  # the plain regex count
    assert train_bpe(path, 400, specials, num_workers=2, verbose=False, chunk_bytes=1 << 14) == \
        train_bpe(path, 400, specials, num_workers=1, verbose=False)


def test_special_tokens_never_merged(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(("hello world" + EOT) * 200 + "<|x" * 3, encoding="utf-8")
    vocab, merges = train_bpe(path, 266, [EOT], verbose=False)
    assert all(b"endoftext" not in t and b"|>" not in t for i, t in vocab.items() if i != 256)
    assert list(vocab.values()).count(EOT.encode()) == 1


def test_running_out_of_pairs_returns_smaller_vocab(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("ab ab ab", encoding="utf-8")
    with pytest.warns(UserWarning, match="ran out of pairs after 2 merges"):
        vocab, merges = train_bpe(path, 1000, [EOT], verbose=False)
    assert merges == [(b"a", b"b"), (b" ", b"ab")] and len(vocab) == 259


def test_train_bad_inputs(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello world", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="training file not found"):
        train_bpe(tmp_path / "missing.txt", 300, [EOT], verbose=False)
    with pytest.raises(ValueError, match="at least 256 bytes \\+ 1 special tokens = 257"):
        train_bpe(path, 256, [EOT], verbose=False)
    with pytest.raises(ValueError, match="list each one once"):
        train_bpe(path, 300, [EOT, EOT], verbose=False)
    for text in ["", EOT + EOT]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match="nothing to train on"):
            train_bpe(path, 300, [EOT], verbose=False)
    path.write_bytes(b"caf\xe9 latin-1")
    with pytest.raises(ValueError, match="not UTF-8 text \\(bad byte at offset 3\\)"):
        train_bpe(path, 300, [EOT], verbose=False)


def test_progress_goes_to_stderr(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text(random_text(random.Random(5), 3000), encoding="utf-8")
    train_bpe(path, 300, [], verbose=True)
    out, err = capsys.readouterr()
    assert out == "" and "merges 44/44" in err and "merges/s" in err and "ETA" in err


# ---------------------------------------------------------------------------------------------------------------------
# encoding


ISSUE_STRINGS = ["Héllò hôw <|endoftext|><|endoftext|> are ü? 🙃<|endoftext|>", "<|endoftext|>\n\n",
                 "<|endoftext|>\n\ntesting!", "", "a", "🙃", "a\n\n\nb", "  leading and trailing  ", "tab\t\tx \n\n y",
                 "null\x00 byte \x00x", "don't we'll they've I'M", "12345 678.9"]


def test_gpt2_matches_tiktoken(gpt2, gpt2_tiktoken):
    texts = ISSUE_STRINGS + [shared_path(f"fixtures/{n}").read_text(encoding="utf-8")
                             for n in ["address.txt", "german.txt", "tinystories_sample.txt", "corpus.en"]]
    texts.append(shared_path("data/owt_valid_10docs.txt").read_text(encoding="utf-8"))
    for text in texts:
        ids = gpt2.encode(text)
        assert ids == gpt2_tiktoken.encode(text, allowed_special="all")
        assert gpt2.decode(ids) == text
    assert gpt2.encode("<|endoftext|>\n\n") == [50256, 628]  # "\n\n" is one GPT-2 token


def test_own_tokenizer_matches_tiktoken(own):
    tok, enc = own
    rng = random.Random(6)
    texts = ISSUE_STRINGS + [random_text(rng, 500, "abcdefghijklmnopqrstuvwxyz\u00e9", [EOT]) for _ in range(5)]
    texts += [fuzz_text(rng, 400, [EOT]) for _ in range(20)]
    for text in texts:
        assert tok.encode(text) == enc.encode(text, allowed_special="all")
        assert tok.decode(tok.encode(text)) == text


def test_fragment_fast_path_equals_plain_pretokenization(own):
    """encode() cuts the text at spaces and caches pieces; it must equal encoding every pre-token of the plain regex."""
    tok, _ = own
    rng = random.Random(7)
    for _ in range(200):
        text = fuzz_text(rng, rng.randint(0, 60), [EOT])
        plain = list(chain.from_iterable(map(tok.word_ids, pretokenize(text, tok.special_re))))
        assert tok.encode(text) == plain, repr(text)


def test_round_trips_and_special_tokens(own):
    tok, _ = own
    for text in ISSUE_STRINGS + ["<|endoftext|><|endoftext|>", "<|endoftext", "endoftext|>"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode(EOT) == [256] and tok.eot_id == 256 and tok.special_tokens == [EOT]
    assert 256 not in tok.encode("<|endoftext")  # a partial special token is ordinary text


def test_overlapping_special_tokens_longest_first(own):
    tok, _ = own
    double = EOT + EOT
    t = Tokenizer(tok.vocab, tok.merges, [EOT, double])
    assert t.vocab_size == tok.vocab_size + 1  # a special token missing from the vocab is appended
    d = t.special_ids[double]
    assert t.encode(double) == [d] and t.encode(EOT * 3) == [d, 256]
    assert t.encode("a" + double + "b") == [*t.encode("a"), d, *t.encode("b")]
    assert t.decode(t.encode(EOT * 5)) == EOT * 5


def test_decode_partial_utf8_and_unknown_id(gpt2):
    assert gpt2.decode([gpt2.token_ids["é".encode()[:1]]]) == "\ufffd"  # half of a 2-byte character
    emoji = gpt2.encode("🙃")
    assert len(emoji) > 1 and gpt2.decode(emoji[:1]) == "\ufffd"
    with pytest.raises(ValueError, match="unknown token id 50257"):
        gpt2.decode([1, 50257])
    with pytest.raises(ValueError, match="unknown token id -1"):
        gpt2.decode([-1])


def test_encode_iterable_equals_encode(own, gpt2):
    tok, _ = own
    text = "a\n\n\nb"
    assert list(tok.encode_iterable(text.splitlines(keepends=True))) == tok.encode(text)
    assert tok.encode(text) != list(chain.from_iterable(map(tok.encode, text.splitlines(keepends=True))))
    path = shared_path("data/owt_valid_10docs.txt")
    with open(path, encoding="utf-8") as f:
        assert list(gpt2.encode_iterable(f)) == gpt2.encode(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("specials", [[EOT], [EOT, EOT + EOT], ["<|a b|>", "\n\n"], []])
def test_encode_iterable_random_splits(own, specials):
    """Tiny buffers and random chunking: every cut encode_iterable makes must leave the ids unchanged."""
    t = Tokenizer(own[0].vocab, own[0].merges, specials)
    t.buffer_chars = 16
    rng = random.Random(8)
    for _ in range(60):
        text = fuzz_text(rng, rng.randint(0, 200), specials)
        cuts = sorted(rng.randint(0, len(text)) for _ in range(rng.randint(0, 30)))
        pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
        assert list(t.encode_iterable(pieces)) == t.encode(text), repr(text)


def test_encode_iterable_bounded_memory(tmp_path, own):
    """Peak RSS of streaming a 12 MB input must be close to that of a 2 MB one (measured in fresh processes)."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux) to read peak RSS")
    own[0].save(tmp_path / "tok")
    (tmp_path / "stream.py").write_text(textwrap.dedent(f"""
        import random, sys
        sys.path.insert(0, {str(ROOT)!r})
        from bpe import Tokenizer
        tok = Tokenizer.load({str(tmp_path / "tok")!r})
        rng = random.Random(0)
        words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(1, 9))) for _ in range(20000)]
        def lines(n_mb):  # ~100-byte lines, a document separator every 50
            for i in range(n_mb * 10000):
                yield " ".join(rng.choices(words, k=15)) + ("\\n" if i % 50 else "<|endoftext|>\\n")
        n = sum(1 for _ in tok.encode_iterable(lines(int(sys.argv[1]))))
        print(n, int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) // 1024)
    """))
    small, large = [subprocess.run([sys.executable, tmp_path / "stream.py", mb], capture_output=True, text=True,
                                   check=True).stdout.split() for mb in ("2", "12")]
    assert int(large[0]) > 5.5 * int(small[0])  # it did encode six times more
    # MB of peak RSS growth: the two cache generations (all pieces here are new) vs ~100 MB for a list of the ids
    assert int(large[1]) - int(small[1]) < 30, (small, large)


def test_caches_are_bounded(own):
    t = Tokenizer(own[0].vocab, own[0].merges, [EOT])
    t.cache_size, t.buffer_chars = 500, 1000
    rng = random.Random(11)
    lines = (" ".join(str(rng.random()) + "x" for _ in range(10)) + "\n" for _ in range(2000))  # all pieces unique
    assert sum(1 for _ in t.encode_iterable(lines)) > 40000
    assert len(t.cache) <= 500 and len(t.cache.old) <= 500 and len(t.word_cache) <= 500


def test_ascii_pattern_equals_gpt2_pattern():
    """GPT2_ASCII (stdlib re, used on ASCII cache misses) must split ASCII text exactly as GPT2_PAT does, including the
    control characters where re's and regex's \\s differ (\\x1c-\\x1f)."""
    rng = random.Random(12)
    atoms = [" ", "  ", "\n", "\r\n", "\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x00", "\x7f", "a", "Zq",
             "7", "42", "'", "'s", "'ll", "'ve", "!", "?.", "<|", "_", "~"]
    texts = ["".join(map(chr, range(128)))] + ["".join(rng.choices(atoms, k=rng.randint(0, 40))) for _ in range(3000)]
    for text in texts:
        assert bpe.GPT2_ASCII.findall(text) == GPT2_PAT.findall(text), repr(text)


@pytest.mark.parametrize("cache_size", [3, 1 << 16])
def test_cached_encode_equals_plain_on_repeats(own, cache_size):
    """The same texts encoded again and again through small (generation flips, promotions) and default caches, and a
    pickled copy (as worker processes get it), all equal encoding each pre-token of the plain regex."""
    t = Tokenizer(own[0].vocab, own[0].merges, [EOT])
    t.cache_size = cache_size
    rng = random.Random(13)
    ascii_atoms = [" ", "  ", " \n", "\n ", "\t", "\x1c", "a", "the", "cat", "7", ",", "'s", EOT]
    texts = [fuzz_text(rng, rng.randint(0, 80), [EOT]) for _ in range(40)]
    texts += ["".join(rng.choices(ascii_atoms, k=rng.randint(0, 60))) for _ in range(40)]
    for text in texts * 3:
        plain = list(chain.from_iterable(map(t.word_ids, pretokenize(text, t.special_re))))
        assert t.encode(text) == plain, repr(text)
    copy = pickle.loads(pickle.dumps(t))
    assert [copy.encode(text) for text in texts] == [t.encode(text) for text in texts]


# ---------------------------------------------------------------------------------------------------------------------
# files, hash, CLI


def test_save_load_round_trip_and_hash(tmp_path, own):
    tok, _ = own
    tok.save(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["merges.txt", "special_tokens.json", "vocab.json"]
    back = Tokenizer.load(tmp_path / "a")
    assert back.vocab == tok.vocab and back.merges == tok.merges and back.special_tokens == [EOT]
    text = fuzz_text(random.Random(9), 300, [EOT])
    assert back.encode(text) == tok.encode(text)
    h = tokenizer_hash(tmp_path / "a")
    assert len(h) == 16 and h == tokenizer_hash(tmp_path / "a")
    Tokenizer(tok.vocab, tok.merges[:-1], [EOT]).save(tmp_path / "b")
    assert tokenizer_hash(tmp_path / "b") != h
    with pytest.raises(FileNotFoundError, match="python bpe.py train"):
        Tokenizer.load(tmp_path / "missing")


def test_from_files_reads_gpt2_fixtures(gpt2):
    assert gpt2.vocab_size == 50257 and len(gpt2.merges) == 50000 and gpt2.eot_id == 50256
    assert gpt2.encode("Hello world") == [15496, 995]


def test_tokenizer_bad_vocab():
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="vocab and merges don't match"):
        Tokenizer(vocab, [(b"a", b"b")])
    with pytest.raises(ValueError, match="needs all 256 bytes"):
        Tokenizer({i: bytes([i]) for i in range(200)}, [])


def test_cli_train_encode_decode(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(random_text(random.Random(10), 3000, specials=[EOT]), encoding="utf-8")
    run = lambda *args: subprocess.run([sys.executable, str(ROOT / "bpe.py"), *map(str, args)], capture_output=True,
                                       text=True)
    r = run("train", "--input", corpus, "--vocab_size", 300, "--special_tokens", EOT, "--out", tmp_path / "tok",
            "--quiet")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "trained 300 tokens" in r.stdout and "peak RSS" in r.stdout and "longest token" in r.stdout
    ids = run("encode", "--tokenizer", tmp_path / "tok", "abc abc" + EOT).stdout.split()
    assert ids[-1] == "256"
    assert run("decode", "--tokenizer", tmp_path / "tok", *ids).stdout == "abc abc" + EOT + "\n"
    r = run("train", "--input", tmp_path / "nope.txt", "--vocab_size", 300, "--out", tmp_path / "x")
    assert r.returncode == 1 and r.stderr.startswith("error: training file not found")
    assert not (tmp_path / "x").exists()
