"""Does a toy noised CLIP guide? Train one (or take a trained file), then measure
1. what it reads: for validation scenes noised to q(x_t | x_0), how often the true caption beats every
   caption with one attribute swapped (shape, colour, count, size, background; chance 1 / classes);
2. what its guidance does: CLIP-guided ancestral sampling of the toy base model (`--respacing`, the
   default sweep's 10 steps) at `--scales` on `--n` captions: the evaluation CLIP's score, FID and the
   evaluation classifier's attribute accuracies (glide_eval.toy.evaluate.guidance_trend, family "clip");
3. the ceiling: the evaluation CLIP's score of real validation images (at the base resolution) with
   their own captions, and classifier-free scale 3 on the same captions and sampler.

Training uses the `noised_clip` stage of `glide-eval toy-models` (CONFIG["noised_clip"] with
`--steps` / `--batch` / `--lr` replaced) in this process, unpinned: for comparing configs, not for
shipping (`make toy-models` trains what ships).

Measured 2026-12-07 (shared 2-core CPU, 1 thread; 512 captions, ancestral 10), first with the toy
base model and evaluation networks shipped before the pinned retrain:

| guide | retrieval t = 0 / 500 | reads shape / count at t = 0, 400 | CLIP score at scales 0 / 2 / 4 / 8 / 16 |
|---|---|---|---|
| shipped (600 steps, batch 64) | 0.50 / 0.31 | 0.42, 0.43 / 0.44, 0.50 | 94.42 / 95.06 / 95.12 / 94.55 / 92.02 |
| 4000 steps, batch 64 (624 s) | 0.72 / 0.39 | 0.58, 0.53 / 0.74, 0.66 | 94.42 / 95.01 / 95.12 / 94.48 / 88.44 |
| 6000 steps, batch 128 (1236 s) | 0.80 / 0.44 | 0.61, 0.53 / 0.84, 0.66 | 94.42 / 95.25 / 95.43 / 93.62 / 84.12 |

Shape accuracy of the samples never rises above scale 0's 0.631 with any of them (0.62 / 0.61 /
0.59 / 0.52 with the strongest); classifier-free scale 3 on the same captions: CLIP score 96.33, shape
0.756; real validation images: 96.18.

Then the pinned retrain that ships (`--weights glide_eval/assets`: the 6000-step, batch-128 guide
retrained with the base model and evaluation networks; retrieval 0.79 / 0.42 at t = 0 / 500 in
the training log): it reads shape / count in 0.60, 0.52 / 0.84, 0.68 of scenes at t = 0, 400; CLIP
score at scales 0 / 2 / 4 / 8 / 16: 94.18 / 95.13 / 95.47 / 93.71 / 85.06, shape accuracy 0.59 /
0.60 / 0.61 / 0.57 / 0.51; classifier-free scale 3: 96.37 (shape 0.72); real validation images:
96.25.

    .venv/bin/python bench/noised_clip.py --out runs/noised_clip_b128 --steps 6000 --batch 128
    .venv/bin/python bench/noised_clip.py --weights glide_eval/assets --scales 0,2,4,8,16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

# bench/metrics.py would shadow the metrics package: drop this script's folder from the import path
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

READ_TIMESTEPS = (0, 200, 400, 600, 800)


@torch.no_grad()
def attribute_reading(model, size: int, t: int, n: int = 400) -> dict:
    """{attribute: share of n validation scenes, noised to step t, whose true caption has the highest
    cosine among the captions that swap only that attribute}."""
    from glide_eval.toy import train as T
    from glide_eval.toy.tokenizer import clip_tokenize
    from glide_eval.toy.world import ATTRIBUTES, caption_for, dataset

    images, _, labels = dataset(n, "validation", 32, seed=0)
    x0 = T._images_at(images, size)
    tt = torch.full((n,), t, dtype=torch.long)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(t))
    img = F.normalize(
        model.image_embeddings(T.DiffusionTables("squaredcos_cap_v2").q_sample(x0, tt, noise), tt), dim=-1
    )
    out = {}
    for attribute, classes in ATTRIBUTES.items():
        hits = 0
        for i in range(n):
            scene = {k: int(labels[k][i]) for k in ATTRIBUTES}
            tokens, lens = clip_tokenize([caption_for({**scene, attribute: c}) for c in range(len(classes))])
            text = F.normalize(model.text_embeddings(tokens, lens), dim=-1)
            hits += int((text @ img[i]).argmax()) == scene[attribute]
        out[attribute] = hits / n
    return out


def real_clip_score(n: int, size: int) -> float:
    from glide_eval.toy.world import dataset
    from metrics.clip_score import clip_scores
    from metrics.extractors import create_extractor

    images, captions, _ = dataset(n, "validation", size, seed=0)
    scores, _ = clip_scores(create_extractor("toy-clip"), torch.from_numpy(np.ascontiguousarray(images)), captions)
    return float(np.mean(scores))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="", help="a folder holding noised_clip.pt (no training)")
    parser.add_argument("--out", default="", help="train into this folder (the other toy weights are copied in)")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: the stage's)")
    parser.add_argument("--batch", type=int, default=0, help="contrastive batch (0: the stage's)")
    parser.add_argument("--lr", type=float, default=0.0, help="learning rate (0: the stage's)")
    parser.add_argument("--scales", default="0,2,4,8,16", help="CLIP guidance scales ('' : none)")
    parser.add_argument("--respacing", default="10")
    parser.add_argument("--n", type=int, default=512, help="captions for guided sampling")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", help="write the results here (atomically)")
    args = parser.parse_args()
    if bool(args.weights) == bool(args.out):
        parser.error("give exactly one of --weights (a trained file) and --out (train one)")
    torch.set_num_threads(args.threads)

    import pandas as pd

    from glide_eval.toy import models as toy_models
    from glide_eval.toy import train as T
    from glide_eval.toy.evaluate import guidance_trend
    from storage.files import write_json

    folder = Path(args.weights or args.out)
    result: dict = {"folder": str(folder)}
    if args.out:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("base", "classifier", "clip", "upsample"):
            shutil.copy(toy_models.weight_path(name), folder / toy_models.FILES[name])
        cfg = json.loads(json.dumps(T.CONFIG["noised_clip"]))
        cfg.update({k: v for k, v in (("steps", args.steps), ("batch", args.batch), ("lr", args.lr)) if v})
        torch.use_deterministic_algorithms(True)
        start = time.perf_counter()
        result["train"] = {"config": cfg, **T.train_noised_clip(cfg, folder, None)}
        result["train"]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"trained in {result['train']['seconds']:.0f} s", flush=True)
    model, _, options = toy_models.load("noised_clip", folder)
    size = options["image_size"]
    result["reading"] = {f"t{t}": attribute_reading(model, size, t) for t in READ_TIMESTEPS}
    print(pd.DataFrame(result["reading"]).T.round(3).to_string(), flush=True)
    if args.scales:
        os.environ[toy_models.ASSETS_ENV] = str(folder)
        scales = [float(s) for s in args.scales.split(",")]
        common = dict(n=args.n, respacing=args.respacing, method="ancestral", batch_size=128)
        result["clip_guided"] = guidance_trend(scales=scales, family="clip", **common)
        result["cfg_3"] = guidance_trend(scales=[3.0], family="cfg", **common)[0]
        result["real_clip_score"] = real_clip_score(args.n, size)
        rows = [{"family": "clip", **r} for r in result["clip_guided"]] + [{"family": "cfg", **result["cfg_3"]}]
        print(pd.DataFrame(rows).round(3).to_string(index=False))
        print(f"real validation images' CLIP score: {result['real_clip_score']:.2f}")
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
