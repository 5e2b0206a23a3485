#!/usr/bin/env python3
"""Would a dense sentence vector help the intent classifier? The one
multilingual text model this project can obtain from a package registry is
Whisper itself (`models/ggml-base.bin`, converted by `./x setup`); its
decoder's token embedding table (51,865 x 512) is tried here as a sentence
embedding: the mean of a message's token vectors (greedy longest-match
tokenisation over Whisper's vocabulary).

Scored on `benches/intent_cv.py`'s folds, each corpus part left out in
turn (`dev.tsv` always trained on), but in a Python
re-creation of the classifier (scikit-learn: character 2-5-grams within
words and word 1-2-grams, TF-IDF, logistic regression), with and without
the embedding appended, and the embedding alone. Rules and thresholds are
not applied, so the figures are top-1 accuracy, not the fast path's.

    python3 -m pip install numpy scikit-learn
    python3 benches/whisper_token_embeddings.py [--model models/ggml-base.bin]

Prints the running accuracy of the three after each fold and the nearest
tokens of a few words.
"""
import argparse
import glob
import re
import struct
import tomllib
import unicodedata
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from intent_cv import CORPUS, folds as corpus_folds

ROOT = Path(__file__).resolve().parent.parent
TOKEN_EMBEDDING = "decoder.token_embedding.weight"


def read_ggml(path):
    """(vocabulary as bytes, token embedding matrix) of a whisper.cpp file."""
    f = Path(path).read_bytes()
    o = 4 + 11 * 4
    n_mels, n_bins = struct.unpack_from("<2i", f, o)
    o += 8 + 4 * n_mels * n_bins
    (n_vocab,) = struct.unpack_from("<i", f, o)
    o += 4
    vocab = []
    for _ in range(n_vocab):
        (length,) = struct.unpack_from("<I", f, o)
        o += 4
        vocab.append(f[o:o + length])
        o += length
    while o < len(f):
        rank, name_len, kind = struct.unpack_from("<3i", f, o)
        o += 12
        dims = struct.unpack_from(f"<{rank}i", f, o)
        o += 4 * rank
        name = f[o:o + name_len].decode()
        o += name_len
        n = int(np.prod(dims))
        if kind not in (0, 1):
            raise SystemExit(f"{path}: {name} is quantised; use the f16 file")
        if name == TOKEN_EMBEDDING:
            emb = np.frombuffer(f, dtype=np.float16, count=n, offset=o)
            return vocab, emb.reshape(dims[1], dims[0]).astype(np.float32)[:len(vocab)]
        o += n * (2 if kind == 1 else 4)
    raise SystemExit(f"{path}: no {TOKEN_EMBEDDING}")


def fold(text):
    t = unicodedata.normalize("NFKD", text.lower())
    t = "".join(c for c in t if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w]|_", " ", t).split())


def rows(path):
    return [tuple(line.rstrip("\n").split("\t")[:3]) for line in open(path)
            if line.strip() and not line.startswith(("#", "lang\t"))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "models/ggml-base.bin"))
    args = ap.parse_args()
    vocab, emb = read_ggml(args.model)
    index = {v: i for i, v in enumerate(vocab)}
    longest = max(len(v) for v in vocab)

    def tokens(text):
        b, out, i = (" " + text.lower()).encode(), [], 0
        while i < len(b):
            for n in range(min(longest, len(b) - i), 0, -1):
                t = index.get(b[i:i + n])
                if t is not None:
                    out.append(t)
                    i += n
                    break
            else:
                i += 1
        return out

    def dense(text):
        t = tokens(text)
        if not t:
            return np.zeros(emb.shape[1], dtype=np.float32)
        v = emb[t].mean(0)
        return v / (np.linalg.norm(v) + 1e-6)

    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for word in [" order", " delivery", " price", " hello", " thanks", " cancel"]:
        near = np.argsort(-(unit @ unit[index[word.encode()]]))[1:8]
        print(repr(word), [vocab[t].decode("utf-8", "replace") for t in near])

    base = []
    for path in sorted(glob.glob(str(ROOT / "data/intents/*.toml"))):
        spec = tomllib.load(open(path, "rb"))
        for lang, examples in spec.get("examples", {}).items():
            base += [(lang, e, spec["intent"]) for e in examples]
    # The same folds as intent_cv.py; dev.tsv is always trained on.
    base += rows(CORPUS / "dev.tsv")
    folds = {name: [tuple(line.split("\t")[:3]) for line in held]
             for name, _, _, held, _ in corpus_folds()}

    right = {"tfidf": 0, "tfidf+whisper": 0, "whisper alone": 0}
    seen = 0
    for held in folds:
        train = base + [r for k, v in folds.items() if k != held for r in v]
        test = folds[held]
        xt, yt = [fold(r[1]) for r in train], [r[2] for r in train]
        xs, ys = [fold(r[1]) for r in test], np.array([r[2] for r in test])
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
        words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)
        a = hstack([chars.fit_transform(xt), words.fit_transform(xt)]).tocsr()
        b = hstack([chars.transform(xs), words.transform(xs)]).tocsr()
        dt = np.array([dense(r[1]) for r in train]) * 0.7
        ds = np.array([dense(r[1]) for r in test]) * 0.7
        runs = {
            "tfidf": (a, b),
            "tfidf+whisper": (hstack([a, csr_matrix(dt)]).tocsr(), hstack([b, csr_matrix(ds)]).tocsr()),
            "whisper alone": (dt, ds),
        }
        for name, (tr, te) in runs.items():
            model = LogisticRegression(C=20, max_iter=300).fit(tr, yt)
            right[name] += int((model.predict(te) == ys).sum())
        seen += len(test)
        print(held, {k: f"{v / seen:.4f}" for k, v in right.items()}, flush=True)


if __name__ == "__main__":
    main()
