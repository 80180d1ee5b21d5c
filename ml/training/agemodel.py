"""A trained age model in torch: one network or an ensemble, how to read its output, its version.
Training, calibration, export (`ml.training.onnx_export`) and the torch reference use it; the service runs the
exported ONNX file instead (`ml.serving.runtime`), which reads the output the same way.

Two kinds of network are served the same way:
- "resnet10" (`ml.training.agenet.AgeNet`) outputs a distribution over one-year classes. An ensemble
  averages its members' distributions. The age is the expected value of that distribution with the
  logits divided by `point_temperature`; the interval is its central range with the logits divided
  by `temperature`. Both temperatures are fitted on validation data: the first for the lowest MAE,
  the second so that the stated coverage holds.
  A model calibrated since December 2026 replaces that range by its calibrated one
  (`ml.serving.interval`: by predicted-age group and face quality, fitted by `ml.training.conformal`),
  kept in `meta`.
- "vgg" (`ml.training.vgg.VGGRegressor`) outputs one number: the interval is that number plus the 10th and
  90th percentiles of its validation residuals.
The weights file (safetensors) carries all of this in its metadata; the export copies it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ml.serving import runtime
from ml.serving.interval import METADATA_KEY, IntervalCalibration, from_metadata
from ml.serving.runtime import AgeDistribution
from ml.training.agenet import AgeNet
from ml.training.vgg import VGGRegressor


def summarise(probs: torch.Tensor, ages: torch.Tensor, coverage: float = 0.8,
              point_probs: torch.Tensor | None = None) -> list[AgeDistribution]:
    """`ml.serving.runtime.summarise` of torch tensors (on any device)."""
    def numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().cpu().numpy()

    return runtime.summarise(numpy(probs), numpy(ages), coverage, None if point_probs is None else numpy(point_probs))


@dataclass
class AgeModel:
    nets: list[nn.Module]
    version: str
    arch: str = "resnet10"
    temperature: float = 1.0  # resnet10: for the interval and spread
    point_temperature: float | None = None  # resnet10: for the age; None = `temperature`
    mirror: bool = False  # average with the mirrored chip
    residuals: tuple[float, float, float] = (-5.0, 5.0, 5.0)  # vgg: 10th, 90th percentile, std
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def interval(self) -> IntervalCalibration | None:
        """The calibrated interval (`ml.serving.interval`), kept in `meta` as the files carry it."""
        return from_metadata(self.meta)

    @interval.setter
    def interval(self, value: IntervalCalibration | None) -> None:
        self.meta.pop(METADATA_KEY, None)
        if value is not None:
            self.meta[METADATA_KEY] = value.to_json()

    @property
    def net(self) -> nn.Module:
        """The first (for a single model, the only) network."""
        return self.nets[0]

    @torch.inference_mode()
    def _outputs(self, chips: np.ndarray) -> list[torch.Tensor]:
        """Each member's output for uint8 chips N x 64 x 64 x 3, mirrored pairs averaged later."""
        device = next(self.net.parameters()).device
        x = self.net.preprocess(torch.from_numpy(np.ascontiguousarray(chips)).to(device))
        if self.mirror:
            x = torch.cat([x, x.flip(3)])
        x = x.contiguous(memory_format=torch.channels_last)
        return [net(x) for net in self.nets]

    def _average(self, outputs: list[torch.Tensor], n: int, temperature: float) -> torch.Tensor:
        probs = sum(torch.softmax(o / temperature, dim=1) for o in outputs) / len(outputs)
        return (probs[:n] + probs[n:]) / 2 if self.mirror else probs

    def probabilities(self, chips: np.ndarray, temperature: float | None = None) -> torch.Tensor:
        """Averaged class probabilities (resnet10), all chips in one forward pass per member."""
        assert self.arch == "resnet10"
        return self._average(self._outputs(chips), len(chips), temperature or self.temperature)

    def estimate(self, chips: np.ndarray, coverage: float = 0.8,
                 face_px: np.ndarray | None = None) -> list[AgeDistribution]:
        """One estimate per chip, as `ml.serving.runtime.ServedAgeModel.estimate`."""
        if len(chips) == 0:
            return []
        outputs = self._outputs(chips)
        n = len(chips)
        if self.arch == "resnet10":
            probs = self._average(outputs, n, self.temperature)
            point = None
            if self.point_temperature and self.point_temperature != self.temperature:
                point = self._average(outputs, n, self.point_temperature)
            return runtime.calibrated(summarise(probs, self.net.ages, coverage, point), self.interval, chips,
                                      coverage, face_px)
        out = sum(outputs) / len(outputs)
        out = (out[:n] + out[n:]) / 2 if self.mirror else out
        lo, hi, sd = self.residuals
        return [AgeDistribution(a, max(0.0, min(a, a + lo)), max(a, a + hi), sd) for a in out.double().tolist()]


def net_spec(net: nn.Module) -> dict[str, int]:
    if isinstance(net, AgeNet):
        return {"num_classes": net.num_classes, "extra_blocks": net.extra_blocks}
    if isinstance(net, VGGRegressor):
        return {"input_size": net.input_size}
    raise TypeError(type(net))


def model_metadata(model: AgeModel) -> dict[str, str]:
    """How to serve the model, as strings: the metadata of both the weights file (`save_age_model`) and
    the exported ONNX file (`ml.training.onnx_export`), which `load_age_model` and `ml.serving.runtime`
    read back. A file format: keys are only ever added."""
    return {
        **model.meta,
        "version": model.version,
        "arch": model.arch,
        "temperature": repr(float(model.temperature)),
        "point_temperature": repr(float(model.point_temperature or model.temperature)),
        "mirror": json.dumps(bool(model.mirror)),
        "residuals": json.dumps(list(model.residuals)),
        "members": json.dumps([net_spec(n) for n in model.nets]),
    }


def save_age_model(path: Path, model: AgeModel, extra: dict[str, str] | None = None, half: bool = False) -> None:
    """Weights as safetensors (float16 if `half`: half the size, the same ages to 0.01 year), with
    what is needed to serve them in the file's metadata. A single network keeps its plain tensor
    names; ensemble members are prefixed `0.`, `1.`, ..."""
    meta = {
        **model_metadata(model),
        **{k: str(v) for k, v in net_spec(model.net).items()},  # single-network files read by older code
        **(extra or {}),
    }
    state = {}
    for i, net in enumerate(model.nets):
        prefix = f"{i}." if len(model.nets) > 1 else ""
        for k, v in net.state_dict().items():
            t = v.detach().cpu().contiguous()
            state[prefix + k] = t.half() if half and t.is_floating_point() else t
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def build_net(arch: str, spec: dict[str, int]) -> nn.Module:
    if arch == "vgg":
        return VGGRegressor(int(spec.get("input_size", 64)))
    return AgeNet(num_classes=int(spec["num_classes"]), extra_blocks=int(spec.get("extra_blocks", 0)))


def load_age_model(path: Path, *, fold: bool = True) -> AgeModel:
    """Load for inference: eval mode, float32; for serving (`fold=True`) resnet10 scales are folded
    into their convolutions and tensors laid out channels-last (about twice as fast on a CPU)."""
    meta = read_metadata(path)
    arch = meta.get("arch", "resnet10")
    members = json.loads(meta["members"]) if "members" in meta else [
        {k: int(meta[k]) for k in ("num_classes", "extra_blocks", "input_size") if k in meta}]
    state = load_file(str(path))
    nets = []
    for i, spec in enumerate(members):
        net = build_net(arch, spec)
        prefix = f"{i}." if len(members) > 1 else ""
        net.load_state_dict({k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)})
        net.eval()
        if fold:
            if isinstance(net, AgeNet):
                net.fold()
            net = net.to(memory_format=torch.channels_last)
        nets.append(net)
    known = {"version", "arch", "temperature", "point_temperature", "mirror", "residuals", "members"}
    return AgeModel(
        nets=nets,
        version=meta["version"],
        arch=arch,
        temperature=float(meta.get("temperature", "1.0")),
        point_temperature=float(meta["point_temperature"]) if "point_temperature" in meta else None,
        mirror=json.loads(meta.get("mirror", "false")),
        residuals=tuple(json.loads(meta.get("residuals", "[-5, 5, 5]"))),
        meta={k: v for k, v in meta.items() if k not in known},
    )
