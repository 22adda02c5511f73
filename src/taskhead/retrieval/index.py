"""An embedding index: documents, their vectors, and search by text or by vector.

```python
index = Index.build("minilm", ["first document", {"id": "d2", "text": "second", "metadata": {...}}])
index.search("a query", k=5)        # [[{"id", "score", "text", "metadata"}, ...]]  best first
index.save("my-index"); index = Index.load("my-index")
```

Scores are inner products of the query and document embeddings: cosine for models that normalize (the
default for sentence-transformers models and plain encoders), dot product otherwise. ``kind="exact"``
ranks every document (the default); ``hnsw`` and ``ivf`` use FAISS for large corpora, with their recall@10
against exact search measured when built and stored with the index.

Saved layout (every file written under a temporary name, the directory swapped into place)::

    INDEX/index.json     format version, model (id, path, fingerprint), dimension, normalized, kind,
                         params, count, measured recall@10 and the number of held-out queries behind it
    INDEX/vectors.npy    float32 (count, dimension)
    INDEX/docs.jsonl     {"id", "text", "metadata"} per row, in vector order
    INDEX/faiss.index    the HNSW / IVF index (approximate kinds only)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from taskhead.errors import IndexMismatchError, RetrievalError
from taskhead.retrieval import ann
from taskhead.retrieval.corpus import Doc, check_unique, read_corpus, to_docs

if TYPE_CHECKING:
    from taskhead.retrieval.encoder import Encoder

DocsInput = Iterable[str | dict[str, Any] | Doc] | os.PathLike[str]


class Index:
    """Documents and their embeddings, searchable by text (embedded with the index's model) or by vector."""

    def __init__(
        self,
        vectors: np.ndarray,
        docs: Sequence[Doc],
        *,
        model_info: dict[str, Any],
        kind: str = "exact",
        approx: ann.Approximate | None = None,
        recall: float | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.ids = [d.id for d in docs]
        self.texts = [d.text for d in docs]
        self.metadata = [d.metadata for d in docs]
        self.rows = {ident: i for i, ident in enumerate(self.ids)}
        self.model_info = dict(model_info)
        self.kind = kind
        self.approx = approx
        self.recall = recall
        self._encoder = encoder
        self._encoder_options: dict[str, Any] = {}
        self.source: Path | None = None  # the directory it was loaded from or saved to, if any

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        model: str | Path | Encoder,
        docs: DocsInput,
        *,
        kind: str = "exact",
        batch_size: int = 64,
        device: str = "auto",
        precision: str = "auto",
        quiet: bool = False,
        trust_remote_code: bool = False,
        **params: Any,
    ) -> Index:
        """Embed ``docs`` with ``model`` and index them.

        Args:
            model: an alias (``minilm``), a sentence-transformers or encoder directory, an embedding run
                directory, or a loaded Encoder.
            docs: strings, dicts with ``id``/``text``/``metadata``, Docs, or a corpus file path (Path).
            kind: ``exact``, ``hnsw`` or ``ivf``.
            batch_size: texts per forward pass.
            device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
            precision: ``auto`` (bf16 where it is fast and agrees with fp32), ``bf16`` or ``fp32``.
            quiet: no progress bar and no summary line on standard error.
            trust_remote_code: allow the model's own Python code (never taken from its saved files).
            **params: FAISS settings: ``M``, ``ef_construction``, ``ef_search`` (hnsw); ``nlist``, ``nprobe``
                (ivf). An unset ``ef_search`` / ``nprobe`` is tuned to reach recall@10 >= 0.98.
        """
        ann.check_params(kind, params)
        encoder = _as_encoder(
            model,
            batch_size=batch_size,
            device=device,
            precision=precision,
            quiet=quiet,
            trust_remote_code=trust_remote_code,
        )
        items = read_corpus(docs) if isinstance(docs, os.PathLike) else to_docs(docs)
        started = time.perf_counter()
        vectors = encoder.encode([d.text for d in items], batch_size=batch_size)
        index = cls.from_vectors(vectors, items, encoder, kind=kind, **params)
        if not quiet:
            index._report(f"indexed {len(items)} documents", time.perf_counter() - started, encoder.truncated)
        return index

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        docs: Iterable[str | dict[str, Any] | Doc],
        encoder: Encoder,
        *,
        kind: str = "exact",
        **params: Any,
    ) -> Index:
        """An index over embeddings already computed with ``encoder`` (row ``i`` for document ``i``); an
        approximate kind is built and its recall measured as in ``build``."""
        params = ann.check_params(kind, params)
        items = to_docs(docs)
        if not items:
            raise RetrievalError("docs: no documents; an index needs at least one")
        if np.ndim(vectors) != 2 or np.shape(vectors) != (len(items), encoder.dimension):
            raise IndexMismatchError(
                f"vectors: expected shape ({len(items)}, {encoder.dimension}) for {len(items)} documents "
                f"and {encoder.model_id}, found {np.shape(vectors)}"
            )
        index = cls(vectors, items, model_info=encoder.describe(), kind=kind, encoder=encoder)
        if kind != "exact":
            index.approx, index.recall = ann.build_approximate(kind, index.vectors, params)
        return index

    def _report(self, what: str, seconds: float, truncated: int) -> None:
        from taskhead.console import info, warn

        info(
            f"{what} in {seconds:.1f} s ({self.dimension} dimensions, {self.similarity}, "
            f"{self.model_info.get('precision', 'fp32')}); the index holds {len(self)}"
        )
        if truncated:
            warn(
                f"{truncated} documents are longer than the model's {self.model_info.get('max_length')} "
                f"tokens; only their beginning was embedded"
            )
        if self.recall is not None:
            info(f"{self.kind} {self._params_text()}: recall@10 {self.recall:.4f} against exact search")
            if self.recall < ann.TARGET_RECALL:
                warn(f"recall@10 {self.recall:.4f} is below {ann.TARGET_RECALL}; raise ef_search / nprobe")

    def _params_text(self) -> str:
        params = self.approx.params if self.approx is not None else {}
        return ", ".join(f"{k}={v}" for k, v in params.items())

    def add(
        self,
        docs: DocsInput,
        *,
        model: str | Path | Encoder | None = None,
        batch_size: int | None = None,
        quiet: bool = False,
    ) -> int:
        """Embed and append documents; returns how many were added.

        An approximate index measures its recall@10 again with (up to 1,000 of) the new documents as
        held-out queries before they go in, and retunes ``ef_search`` / ``nprobe`` unless they were fixed.

        Raises:
            IndexMismatchError: ``model`` gives embeddings of another dimension or normalization.
            RetrievalError: an id that is already in the index or occurs twice in ``docs``.
        """
        if model is not None:
            self.use_model(model)
        encoder = self.encoder
        items = read_corpus(docs) if isinstance(docs, os.PathLike) else to_docs(docs, start=len(self))
        check_unique(items, self.rows)
        started = time.perf_counter()
        vectors = encoder.encode([d.text for d in items], batch_size=batch_size)
        start = len(self)
        for doc in items:
            self.rows[doc.id] = len(self.ids)
            self.ids.append(doc.id)
            self.texts.append(doc.text)
            self.metadata.append(doc.metadata)
        self.vectors = np.ascontiguousarray(np.vstack([self.vectors, vectors]), dtype=np.float32)
        if self.approx is not None and items:
            recall = ann.add_measured(self.approx, self.vectors, start=start)
            self.recall = self.recall if recall is None else recall
        if not quiet:
            self._report(f"added {len(items)} documents", time.perf_counter() - started, encoder.truncated)
        return len(items)

    # ------------------------------------------------------------------ the model

    @property
    def dimension(self) -> int:
        return int(self.model_info["dimension"])

    @property
    def normalized(self) -> bool:
        return bool(self.model_info["normalized"])

    @property
    def similarity(self) -> str:
        return "cosine" if self.normalized else "dot"

    @property
    def encoder(self) -> Encoder:
        """The model that embeds queries: loaded on first use from what the index recorded."""
        if self._encoder is None:
            return self.use_model(self._recorded_model(), **self._encoder_options)
        return self._encoder

    def _recorded_model(self) -> str:
        for candidate in (self.model_info.get("model"), self.model_info.get("path")):
            if candidate and (not os.path.isabs(candidate) or Path(candidate).is_dir()):
                return str(candidate)
        where = f" {self.source}" if self.source else ""
        raise RetrievalError(
            f"index{where} was built with {self.model_info.get('model')}, which is not found here; "
            f"pass the model (Index.load(dir, model=...), or --model on the command line)"
        )

    def use_model(self, model: str | Path | Encoder, **encoder_options: Any) -> Encoder:
        """Embed queries and new documents with ``model`` from now on; returns its Encoder.

        Raises:
            IndexMismatchError: its embeddings have another dimension or normalization than the index's.
        """
        from taskhead.retrieval.encoder import Encoder

        encoder = model if isinstance(model, Encoder) else Encoder(model, **encoder_options)
        ours = (self.dimension, self.normalized)
        if (encoder.dimension, encoder.normalized) != ours:
            where = f" {self.source}" if self.source else ""

            def kind(dim: int, norm: bool) -> str:
                return f"{dim}-dimensional {'normalized (cosine)' if norm else 'unnormalized (dot)'}"

            raise IndexMismatchError(
                f"model {encoder.model_id} gives {kind(encoder.dimension, encoder.normalized)} embeddings; "
                f"the index{where} holds {kind(*ours)} ones from {self.model_info.get('model')}; use that "
                f"model or build a new index"
            )
        recorded = self.model_info.get("fingerprint")
        if recorded and encoder.fingerprint != recorded:
            from taskhead.console import warn

            warn(
                f"model {encoder.model_id} has other weights than {self.model_info.get('model')}, which "
                f"built the index; scores mix two embedding spaces"
            )
        self._encoder = encoder
        return encoder

    # ------------------------------------------------------------------ search

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries: str | Sequence[str], k: int = 10) -> list[list[dict[str, Any]]]:
        """The ``k`` best documents for each query, best first: ``{"id", "score", "text", "metadata"}``.

        A single string gives a list with one result list.
        """
        texts = [queries] if isinstance(queries, str) else list(queries)
        _check_k(k)
        if not texts:
            return []
        return self.search_vectors(self.encoder.encode(texts), k)

    def search_vectors(
        self, vectors: np.ndarray | Sequence[float], k: int = 10
    ) -> list[list[dict[str, Any]]]:
        """Like ``search`` for query embeddings (``(dimension,)`` or ``(n, dimension)``), scored as given."""
        scores, rows = self.search_raw(vectors, k)
        return [
            [self.hit(int(r), float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
            for srow, rrow in zip(scores, rows, strict=True)
        ]

    def search_raw(self, vectors: np.ndarray | Sequence[float], k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row numbers ``(n, min(k, len))``, best first (row -1: no result, approximate kinds)."""
        _check_k(k)
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dimension:
            raise IndexMismatchError(
                f"query vectors: expected shape (n, {self.dimension}), found {tuple(np.shape(vectors))}"
            )
        if self.approx is not None:
            return self.approx.search(queries, k)
        return ann.exact_search(self.vectors, queries, k)

    def hit(self, row: int, score: float) -> dict[str, Any]:
        return {"id": self.ids[row], "score": score, "text": self.texts[row], "metadata": self.metadata[row]}

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> Path:
        """Write the index to ``directory`` (replaced as a whole, atomically); returns its path."""
        from taskhead.retrieval.store import write_index_files

        self.source = write_index_files(Path(directory), self)
        return self.source

    @classmethod
    def load(
        cls, directory: str | Path, *, model: str | Path | Encoder | None = None, **encoder_options: Any
    ) -> Index:
        """Read a saved index. The model that embeds queries loads on first text search; pass ``model`` to
        use another copy of it (checked for dimension and normalization now).

        ``encoder_options`` (``device``, ``precision``, ``batch_size``, ``trust_remote_code``) apply to the
        model when it loads; ``trust_remote_code`` (default False) is the only way to run a query model's own
        Python code: what the index recorded never grants it.
        """
        from taskhead.retrieval.store import read_index_files

        vectors, docs, meta, approx = read_index_files(Path(directory))
        index = cls(
            vectors,
            docs,
            model_info=meta["model"],
            kind=meta["kind"],
            approx=approx,
            recall=meta.get("recall_at_10"),
        )
        index.source = Path(directory)
        index._encoder_options = dict(encoder_options)
        if model is not None:
            index.use_model(model, **encoder_options)
        return index


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise RetrievalError(f"k: expected a positive integer, found {k!r}")


def _as_encoder(model: str | Path | Encoder, **options: Any) -> Encoder:
    from taskhead.retrieval.encoder import Encoder

    if isinstance(model, Encoder):
        return model
    quiet = options.pop("quiet", False)
    return Encoder(model, progress=not quiet, **options)
