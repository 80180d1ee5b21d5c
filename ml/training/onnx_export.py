"""Export a trained age model to the ONNX file the service runs (`ml.serving.runtime`): part of a release.

    python -m ml export ml/weights/resnet10x3-utkface-v2.safetensors --out ml/weights/resnet10x3-utkface-v2.onnx

The .safetensors file stays the training source and the torch reference; the .onnx file is what is
served. One file holds the whole model: every member of an ensemble in one graph (input `chips`,
uint8 N x 64 x 64 x 3; one output per member, `member0`, `member1`, ...) and, as ONNX metadata,
everything needed to read it (version, arch, temperatures, mirror, residuals, the age of each class)
plus the name and SHA-256 of the weights it came from. Weights stored as float16 stay float16 in
the file, each cast to float32 once when ONNX Runtime loads it: the served network computes with
exactly the numbers the torch reference does. Before writing, the export checks that ONNX Runtime
gives the torch model's ages on a batch of chips.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from ml.serving import runtime
from ml.training.agemodel import AgeModel, load_age_model, model_metadata
from ml.training.agenet import ResidualBlock

OPSET = 17
TOLERANCE_YEARS = 0.01  # between torch and ONNX Runtime on the export's check chips


class ExportGraph(nn.Module):
    """uint8 chips in, each member's output out (the runtime may run members on threads of their own)."""

    def __init__(self, model: AgeModel) -> None:
        super().__init__()
        self.nets = nn.ModuleList(model.nets)

    def forward(self, chips: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.nets[0].preprocess(chips)
        return tuple(net(x) for net in self.nets)


def fix_padding(graph: ExportGraph) -> None:
    """Record each downsampling block's padding for 64 px chips (one dry run), so that the graph holds
    constants rather than shape arithmetic."""
    blocks = [m for m in graph.modules() if isinstance(m, ResidualBlock) and m.down]
    sizes: dict[ResidualBlock, tuple[int, int]] = {}
    hooks = [b.register_forward_hook(lambda m, args, out: sizes.__setitem__(m, tuple(args[0].shape[2:])))
             for b in blocks]
    with torch.no_grad():
        graph(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
    for h in hooks:
        h.remove()
    for b in blocks:
        h, w = sizes[b]
        b.fixed_pad = (h // 2 - ((h - 3) // 2 + 1), w // 2 - ((w - 3) // 2 + 1))  # pooled size - conv size


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metadata(model: AgeModel, source: Path) -> dict[str, str]:
    meta = {
        **model_metadata(model),
        "exported_from": source.name,
        "exported_from_sha256": sha256(source),
        "exporter": f"torch {torch.__version__}, opset {OPSET}",
    }
    if model.arch == "resnet10":
        meta["ages"] = json.dumps([float(a) for a in model.net.ages.tolist()])
    return meta


def float16_initializers(graph: onnx.GraphProto) -> int:
    """Store each float32 initializer that float16 holds exactly (weights saved as float16) as float16,
    cast back by a node at the head of the graph; ONNX Runtime folds the casts once at load. Returns
    how many were converted."""
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(init)
            half = values.astype(np.float16)
            if values.size > 1 and np.array_equal(half.astype(np.float32), values):
                name = init.name
                kept.append(numpy_helper.from_array(half, name + "_fp16"))
                casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT,
                                              name=name + "_cast"))
                continue
        kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(casts)


def check_chips(seed: int = 0) -> np.ndarray:
    """Chips for the export's own check: smooth random images (a face-like spread of values, not noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 8, 3)).astype(np.float32)
    chips = torch.nn.functional.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2), size=(64, 64),
                                            mode="bilinear", align_corners=False)
    return chips.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def export(source: Path, out: Path) -> runtime.ServedAgeModel:
    """Write `out` from the weights at `source`; return it loaded by the serving runtime."""
    model = load_age_model(source, fold=False)  # unfolded: the file holds the stored numbers as they are
    graph = ExportGraph(model).eval()
    fix_padding(graph)
    outputs = [runtime.member_output(i) for i in range(len(model.nets))]
    buf = io.BytesIO()
    # The TorchScript exporter (dynamo=False): the newer one needs onnxscript, and this graph is plain.
    # It warns that it is deprecated, and about shape inference it does not need here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(graph, (torch.zeros(1, 64, 64, 3, dtype=torch.uint8),), buf, dynamo=False,
                          opset_version=OPSET, input_names=[runtime.INPUT], output_names=outputs,
                          dynamic_axes={name: {0: "faces"} for name in [runtime.INPUT, *outputs]})
    proto = onnx.load_from_string(buf.getvalue())
    float16_initializers(proto.graph)
    helper.set_model_props(proto, dict(sorted(metadata(model, source).items())))  # sorted: the same bytes each time
    proto.producer_name = "whatsmyage ml.export"  # in the file: kept as the shipped files have it
    onnx.checker.check_model(proto)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp" + runtime.ONNX_SUFFIX)
    onnx.save(proto, str(tmp))
    try:
        served = runtime.load_age_model(tmp)
        chips = check_chips()
        want = np.array([e.age for e in model.estimate(chips)])
        got = np.array([e.age for e in served.estimate(chips)])
        worst = float(np.abs(want - got).max())
        if worst > TOLERANCE_YEARS:
            raise SystemExit(f"export check failed: ONNX Runtime differs from torch by {worst:.4f} years")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"{out}: {model.version}, {len(model.nets)} network(s), {out.stat().st_size / 1e6:.1f} MB; "
          f"ages within {worst:.5f} years of torch on {len(chips)} check chips")
    return runtime.load_age_model(out)
