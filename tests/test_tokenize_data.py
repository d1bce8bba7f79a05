"""tokenize_data.py: chunked parallel output equals Tokenizer.encode of the whole text, sidecars, atomic writes,
validation carving, downloads (file:// and a fake HTTP server object, never the network), bad inputs."""
import gzip
import json
import os
import sys
import urllib.request

import numpy as np
import pytest

import bpe
import tokenize_data as td
from conftest import shared_path
from tokenize_data import EOT

# Whitespace and specials at every chunk boundary: cuts land before each <|endoftext|>, where a wrong cut would
# change how spaces/newlines pre-tokenize.
TRICKY = (f"{EOT}start\n\n{EOT}\n\nHello  world \n{EOT}  x{EOT}{EOT}\r\n\t{EOT} \n\n  emoji 🙂 caf\u00e9   "
          f"\n{EOT}'s don't{EOT}\u4e2d\u6587 {EOT}    {EOT}end   ")


@pytest.fixture(scope="session")
def trained():
    """A small real BPE (vocab 400, <|endoftext|> special) trained on the CS336 test corpus: (vocab, merges)."""
    return bpe.train_bpe(str(shared_path("fixtures/corpus.en")), 400, [EOT], verbose=False)


@pytest.fixture(scope="session")
def tok_dir(trained, tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    bpe.Tokenizer(*trained, [EOT]).save(str(d))
    return str(d)


@pytest.fixture(scope="session")
def tok(tok_dir):
    return bpe.Tokenizer.load(tok_dir)


def run_main(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["tokenize_data.py", "--quiet", *map(str, args)])
    td.main()


def read_ids(path):
    meta = json.loads(open(str(path) + ".json").read())
    return np.fromfile(path, dtype=meta["dtype"]).tolist(), meta


def write_text(path, text):
    path.write_bytes(text.encode())
    return path


@pytest.fixture(params=["tinystories", "owt", "tricky"])
def sample(request, tmp_path):
    """Real text with many <|endoftext|>, and a synthetic one with whitespace around every special token."""
    if request.param == "tinystories":
        text = shared_path("data/tinystories_v2_sample.txt").read_text()[:60_000]
    elif request.param == "owt":
        text = shared_path("data/owt_valid_10docs.txt").read_text()
    else:
        text = TRICKY
    return write_text(tmp_path / "in.txt", text)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_output_equals_encode_of_whole_text(tok, tok_dir, sample, tmp_path, num_workers):
    out = str(tmp_path / "out.bin")
    chunk = 20  # bytes: cut before (almost) every <|endoftext|>
    assert len(list(td.plan_spans(str(sample), 0, sample.stat().st_size, chunk, True))) >= 6
    n = td.tokenize_file(tok, tok_dir, str(sample), out, num_workers=num_workers, chunk_bytes=chunk, quiet=True)
    ids, meta = read_ids(out)
    assert ids == tok.encode(sample.read_bytes().decode())  # no newline translation
    assert n == len(ids) == meta["num_tokens"]


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc (Linux only)")
def test_heap_trimmed_only_after_growth(monkeypatch, tok, tmp_path):
    """encode_and_trim returns encode_span's bytes, trims glibc's heap once, then not again until RSS grows 16 MB."""
    path = write_text(tmp_path / "in.txt", TRICKY * 20)
    span = (0, os.path.getsize(path))
    trims = []
    monkeypatch.setattr(td, "malloc_trim", trims.append)
    monkeypatch.setattr(td, "_rss_limit", 0)
    assert td.encode_and_trim(tok, str(path), span, np.uint16) == td.encode_span(tok, str(path), span, np.uint16)
    assert trims == [0] and td._rss_limit == pytest.approx(td.rss_bytes() + (16 << 20), abs=4 << 20)
    td.encode_and_trim(tok, str(path), span, np.uint16)
    assert trims == [0]  # no growth: no second trim
    monkeypatch.setattr(td, "_rss_limit", td.rss_bytes() - 1)  # as if the heap had grown past the limit
    td.encode_and_trim(tok, str(path), span, np.uint16)
    assert trims == [0, 0]


def test_sidecar(tok, tok_dir, tmp_path):
    src = write_text(tmp_path / "in.txt", TRICKY)
    out = str(tmp_path / "out.bin")
    td.tokenize_file(tok, tok_dir, str(src), out, quiet=True)
    ids, meta = read_ids(out)
    assert meta == {"dtype": "uint16", "num_tokens": len(ids), "vocab_size": 400,
                    "tokenizer_hash": bpe.tokenizer_hash(tok_dir), "tokenizer_dir": tok_dir,
                    "source": str(src), "source_bytes": len(TRICKY.encode())}
    assert os.path.getsize(out) == 2 * len(ids)
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.bin", "out.bin.json"]  # no .tmp left behind


def test_find_eot_across_blocks(monkeypatch, tmp_path):
    monkeypatch.setattr(td, "BLOCK", 7)  # tiny blocks: tokens straddle block edges in both scan directions
    text = ("ab" + EOT + "c" * 9 + EOT + EOT + "d" * 5 + EOT).encode()
    truth = [i for i in range(len(text)) if text.startswith(EOT.encode(), i)]
    path = write_text(tmp_path / "t.txt", text.decode())
    with open(path, "rb") as f:
        forward = [td.find_eot(f, p, len(text)) for p in range(len(text) + 1)]
        backward = [td.rfind_eot(f, p) for p in range(len(text) + 1)]
    assert forward == [min([t for t in truth if t >= p] + [len(text)]) for p in range(len(text) + 1)]
    assert backward == [max([t for t in truth if t < p] + [-1]) for p in range(len(text) + 1)]
    spans = list(td.plan_spans(str(path), 0, len(text), 1, True))
    assert [a for a, _ in spans] == [0] + truth and spans[-1][1] == len(text)


@pytest.mark.parametrize("tail", ["", "\n", "\nlast words"])
def test_carve_point(tmp_path, tail):
    docs = [f"doc {i}\n{EOT}" for i in range(5)]
    path = write_text(tmp_path / "t.txt", "".join(docs) + tail)
    extra = 1 if tail.strip() else 0  # trailing text after the final separator is a document of its own
    for n in range(1, 5 + extra):
        cut = td.carve_point(str(path), n)
        val = path.read_bytes()[cut:].decode()
        assert val.count("doc ") + val.count("last words") == n
    with pytest.raises(SystemExit, match=f"--val_docs {5 + extra} leaves no training text"):
        td.carve_point(str(path), 5 + extra)


def test_val_carving_cli(monkeypatch, tok, tok_dir, tmp_path):
    src = shared_path("data/tinystories_v2_train_10docs.txt")
    text = src.read_bytes()
    train, valid = tmp_path / "train.bin", tmp_path / "valid.bin"
    run_main(monkeypatch, "--tokenizer", tok_dir, "--input", src, "--output", train, "--val_docs", 3,
             "--val_output", valid, "--num_workers", 2, "--chunk_mb", 0.001)
    (train_ids, train_meta), (valid_ids, valid_meta) = read_ids(train), read_ids(valid)
    cut = train_meta["source_bytes"]
    assert cut + valid_meta["source_bytes"] == len(text)
    assert text[:cut].endswith(EOT.encode()) and text[cut:].count(EOT.encode()) == 3
    assert train_ids == tok.encode(text[:cut].decode()) and valid_ids == tok.encode(text[cut:].decode())
    assert train_ids + valid_ids == tok.encode(text.decode())


def test_dtype_choice():
    assert td.choose_dtype(400) == td.choose_dtype(65535) == np.uint16
    assert td.choose_dtype(65536) == td.choose_dtype(200_000) == np.uint32


def test_big_vocab_writes_uint32(monkeypatch, tmp_path):
    """A real Tokenizer with every byte pair merged (65,792 tokens) needs uint32 ids."""
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(bytes([a]), bytes([b])) for a in range(256) for b in range(256)]
    vocab.update({256 + i: a + b for i, (a, b) in enumerate(merges)})
    tok_dir = tmp_path / "bigtok"
    bpe.Tokenizer(vocab, merges, []).save(str(tok_dir))
    src = write_text(tmp_path / "in.txt", "zz zz")  # "zz" -> 256 + 122*256 + 122 = 31610; " zz" -> 2 merges
    out = tmp_path / "out.bin"
    run_main(monkeypatch, "--tokenizer", tok_dir, "--input", src, "--output", out, "--num_workers", 1)
    ids, meta = read_ids(out)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 65792
    assert ids == bpe.Tokenizer.load(str(tok_dir)).encode("zz zz") and max(ids) >= 256 + 122 * 256 + 122


class FakeTokenizer:
    """Stands in for a Tokenizer: encode returns fixed ids, or raises on BOOM (a worker dying mid-file)."""
    special_tokens = [EOT]

    def __init__(self, vocab_size, ids):
        self.vocab_size, self.ids = vocab_size, ids

    def encode(self, text):
        if "BOOM" in text:
            raise RuntimeError("worker died")
        return self.ids


def test_id_that_does_not_fit(tok_dir, tmp_path):
    src = write_text(tmp_path / "in.txt", "hello")
    with pytest.raises(ValueError, match="token id 70000 does not fit uint16"):
        td.tokenize_file(FakeTokenizer(1000, [1, 70000]), tok_dir, str(src), str(tmp_path / "o.bin"), quiet=True)
    assert os.listdir(tmp_path) == ["in.txt"]


@pytest.mark.parametrize("num_workers", [1, 2])
@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_write_leaves_no_final_file(tok_dir, tmp_path, num_workers, existing):
    docs = [f"doc {i}{EOT}" for i in range(40)]
    docs[25] = f"BOOM{EOT}"  # the encoder fails on a chunk well after the first results were written
    src = write_text(tmp_path / "in.txt", "".join(docs))
    out = str(tmp_path / "out.bin")
    if existing:
        open(out, "wb").write(b"old tokens")
        open(out + ".json", "w").write("old sidecar")
    with pytest.raises(RuntimeError, match="worker died"):
        td.tokenize_file(FakeTokenizer(1000, [1, 2, 3]), tok_dir, str(src), out, num_workers=num_workers,
                         chunk_bytes=1, quiet=True)
    if existing:
        assert open(out, "rb").read() == b"old tokens" and open(out + ".json").read() == "old sidecar"
    else:
        assert not os.path.exists(out) and not os.path.exists(out + ".json")
    assert not os.path.exists(out + ".tmp")


def test_can_split_at_eot():
    assert td.can_split_at_eot([EOT])
    for other in ["<|pad|>", "|>x"]:  # "|>x" can only start inside an <|endoftext|>, which matches first
        assert td.can_split_at_eot([EOT, other]), other
    assert not td.can_split_at_eot([])
    for other in [EOT + EOT, "a" + EOT + "b", "x<|", "<|end"]:  # could match across the start of <|endoftext|>
        assert not td.can_split_at_eot([EOT, other]), other


def test_overlapping_specials_fall_back_to_one_chunk(trained, tmp_path):
    """With "<|endoftext|><|endoftext|>" also special, a cut between the two would change the tokens."""
    vocab, merges = trained
    vocab = {**vocab, len(vocab): (EOT + EOT).encode()}
    specials = [EOT, EOT + EOT]
    vocab[len(vocab)] = (EOT + EOT).encode()
    double = bpe.Tokenizer(vocab, merges, specials)
    double.save(str(tmp_path / "tok2"))
    src = write_text(tmp_path / "in.txt", TRICKY)
    out = str(tmp_path / "out.bin")
    assert len(list(td.plan_spans(str(src), 0, src.stat().st_size, 1, td.can_split_at_eot(specials)))) == 1
    td.tokenize_file(double, str(tmp_path / "tok2"), str(src), out, num_workers=2, chunk_bytes=1, quiet=True)
    assert read_ids(out)[0] == double.encode(TRICKY)


def test_dataset_download_from_file_url(monkeypatch, tok, tok_dir, tmp_path):
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    mirror.mkdir()
    train_text, valid_text = f"one story{EOT}\n" * 50, f"a valid story{EOT}\n" * 5
    write_text(mirror / "TinyStoriesV2-GPT4-train.txt", train_text)
    write_text(mirror / "TinyStoriesV2-GPT4-valid.txt", valid_text)
    (mirror / "owt_train.txt.gz").write_bytes(gzip.compress(train_text.encode()))
    (mirror / "owt_valid.txt.gz").write_bytes(gzip.compress(valid_text.encode()))
    url = mirror.as_uri()
    run_main(monkeypatch, "--dataset", "owt", "--url_base", url, "--data_dir", data)  # download + gunzip only
    assert sorted(os.listdir(data)) == ["owt_train.txt", "owt_valid.txt"]  # .gz removed once unzipped
    assert (data / "owt_train.txt").read_text() == train_text
    run_main(monkeypatch, "--dataset", "tinystories", "--url_base", url, "--data_dir", data, "--tokenizer", tok_dir)
    assert (data / "TinyStoriesV2-GPT4-valid.txt").read_text() == valid_text
    assert read_ids(data / "ts_train.bin")[0] == tok.encode(train_text)
    assert read_ids(data / "ts_valid.bin")[0] == tok.encode(valid_text)
    # present files are never fetched again: an unreachable mirror is fine now
    run_main(monkeypatch, "--dataset", "owt", "--url_base", "file:///nonexistent", "--data_dir", data)


def test_offline_error_says_where_to_put_files(monkeypatch, tmp_path):
    data = tmp_path / "data"
    with pytest.raises(SystemExit) as e:
        run_main(monkeypatch, "--dataset", "tinystories", "--url_base", (tmp_path / "nowhere").as_uri(),
                 "--data_dir", data)
    msg = str(e.value.code)
    assert msg.startswith("error: cannot download") and "Offline?" in msg and "\n" not in msg
    assert f"put them in {data}/" in msg and "TinyStoriesV2-GPT4-valid.txt" in msg
    assert not any(data.iterdir())


class FakeResponse:
    """Minimal urlopen() result that honours (or, with status 200, ignores) a Range request."""

    def __init__(self, body, status):
        self.body, self.status, self.pos = body, status, 0
        self.headers = {"Content-Length": str(len(body))}

    def read(self, n):
        self.pos += n
        return self.body[self.pos - n:self.pos]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


@pytest.mark.parametrize("honours_range", [True, False])
def test_download_resumes_partial_file(monkeypatch, tmp_path, honours_range):
    full = os.urandom(3 * 2**20 + 5)
    dest = str(tmp_path / "f.txt")
    open(dest + ".part", "wb").write(full[:1000])  # an earlier, interrupted download

    def fake_urlopen(request, timeout):
        assert request.get_header("Range") == "bytes=1000-"
        return FakeResponse(full[1000:], 206) if honours_range else FakeResponse(full, 200)
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    td.download("https://example.invalid/f.txt", dest, quiet=True)
    assert open(dest, "rb").read() == full and not os.path.exists(dest + ".part")


def test_bad_inputs(monkeypatch, tok_dir, tmp_path):
    src = write_text(tmp_path / "in.txt", f"a story{EOT}\n")
    out = tmp_path / "out.bin"
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    cases = [
        (["--input", tmp_path / "missing.txt", "--output", out], "input file .*missing.txt not found"),
        (["--input", src, "--output", tmp_path / "nodir" / "x.bin"], "nodir/ does not exist: create it"),
        (["--input", src, "--output", src], "is the input file"),
        (["--input", src, "--output", out, "--val_docs", 1, "--val_output", tmp_path / "v.bin"],
         "leaves no training text"),
        (["--input", src, "--output", out, "--val_docs", 1], "go together"),
        (["--input", src, "--output", out, "--num_workers", 0], "--num_workers must be >= 1"),
        (["--dataset", "owt", "--input", src], "--dataset picks its own files"),
    ]
    for args, msg in cases:
        with pytest.raises(SystemExit, match=msg):
            run_main(monkeypatch, "--tokenizer", tok_dir, *args)
    with pytest.raises(SystemExit, match="vocab.json"):  # bpe.Tokenizer.load names the missing file
        run_main(monkeypatch, "--tokenizer", empty_dir, "--input", src, "--output", out)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text" + EOT.encode() + b"\xff oops")
    with pytest.raises(SystemExit, match="not valid UTF-8 at byte 22"):
        run_main(monkeypatch, "--tokenizer", tok_dir, "--input", bad, "--output", out)
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "empty", "in.txt"]  # nothing written, nothing lost


def test_creates_data_dir_only(monkeypatch, tok_dir, tmp_path):
    src = write_text(tmp_path / "in.txt", f"a story{EOT}\n")
    monkeypatch.chdir(tmp_path)
    run_main(monkeypatch, "--tokenizer", tok_dir, "--input", src, "--output", "data/x.bin")
    assert os.path.exists("data/x.bin") and os.path.exists("data/x.bin.json")


def test_progress_line(tok, tok_dir, tmp_path, capsys):
    src = write_text(tmp_path / "in.txt", TRICKY * 20)
    td.tokenize_file(tok, tok_dir, str(src), str(tmp_path / "o.bin"), chunk_bytes=100)
    lines = capsys.readouterr().err.split("\r")[1:]
    assert len(lines) > 5 and all(" MB, " in line and " MB/s" in line for line in lines)
    assert "ETA" in lines[0] and lines[-1].startswith(f"tokenizing {src}") and lines[-1].endswith("\n")
