"""Controls for the GPNN-CAM comparison (results.json): does phase 2 win on the energy pointing game
only because its maps are sparser (clip at the mean of the prediction), or because of the layer?

Scores on the same 64 rows of the default benchmark, Grad-CAM variants that need no variations:
  gradcam                   Grad-CAM at head (as in results.json)
  gradcam_meanclip          relu(L - mean_hw L) at head: the sparsity of clip(X w, 0) without GPNN
  gradcam_blocks10          Grad-CAM at blocks.10 (14 x 14, the regression layer)
  gradcam_blocks10_meanclip relu(L - mean_hw L) at blocks.10
  center                    the centred Gaussian baseline
and compares each with 'gpnncam' from results.json, image by image.

  .venv/bin/python experiments/gpnn_cam/controls.py --out experiments/gpnn_cam
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default="experiments/gpnn_cam")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from sycam.api import CAM
    from sycam.data import default_benchmark
    from sycam.evaluation import baseline_maps, resolve_metrics
    from sycam.kernels.postprocess import finalize
    from sycam.metrics import summarise
    from sycam.models import load_model

    out = Path(args.out)
    ref = json.loads((out / "results.json").read_text())
    bundle = load_model()
    batch = default_benchmark(args.size, bundle=bundle)
    assert list(batch.names) == ref["names"], "not the rows of results.json"
    metrics = resolve_metrics(["pointing_game", "energy_pointing_game"])
    scores: dict[str, dict[str, list[float]]] = {m: {} for m in metrics}
    for start in range(0, len(batch), 16):
        part = batch[slice(start, start + 16)]
        maps = {}
        for layer, tag in (("head", ""), ("blocks.10", "_blocks10")):
            e = CAM("gradcam", bundle.model, layer).explain(part.x, part.labels)
            raw = e.layer_maps[layer]
            maps[f"gradcam{tag}"] = e.maps
            maps[f"gradcam{tag}_meanclip"] = finalize((raw - raw.mean((1, 2), keepdim=True)).clamp_min(0),
                                                      part.size)[0]
        maps["center"] = baseline_maps("center", len(part), part.size, part.x.device)
        stack = torch.stack(list(maps.values()))
        for name, metric in metrics.items():
            for k, v in zip(maps, metric(stack, part)):
                scores[name].setdefault(k, []).extend(v.tolist())
    lines = ["| map | pointing game [95% CI] | energy PG [95% CI] "
             "| gpnncam EPG minus this [95% CI] (gpnncam better/worse) |",
             "|---|---|---|---|"]
    summary = {}
    for k in scores["pointing_game"]:
        pg = summarise(torch.tensor(scores["pointing_game"][k]), method="bootstrap")
        epg = summarise(torch.tensor(scores["energy_pointing_game"][k]))
        gpnncam_epg = torch.tensor(ref["per_image"]["energy_pointing_game"]["gpnncam"])
        d = gpnncam_epg - torch.tensor(scores["energy_pointing_game"][k])
        ds = summarise(d, method="bootstrap")
        summary[k] = {"pg": float(pg.mean), "epg": float(epg.mean), "gpnncam_minus_epg": float(ds.mean),
                      "low": float(ds.low), "high": float(ds.high)}
        lines.append(f"| {k} | {pg.mean:.3f} [{pg.low:.3f}, {pg.high:.3f}] "
                     f"| {epg.mean:.3f} [{epg.low:.3f}, {epg.high:.3f}] | "
                     f"{ds.mean:+.3f} [{ds.low:+.3f}, {ds.high:+.3f}] ({int((d > 0).sum())}/{int((d < 0).sum())}) |")
    (out / "controls.json").write_text(json.dumps({"summary": summary, "per_image": scores}, indent=1))
    (out / "controls.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
