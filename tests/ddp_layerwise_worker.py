"""Run under torchrun: layer-wise reconstruction of the digits CNN, each rank calibrating on its
share of the batches; each rank saves its weights, and rank 0 also the single-process result."""

import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from slr_prune import PruneSpec
from slr_prune.adapters import ClassificationTask
from slr_prune.engine.reconstruct import reconstruct
from slr_prune.layerwise import Reconstruction, full_passes, layer_gram

out = Path(sys.argv[1])
dist.init_process_group("gloo")
torch.manual_seed(0)
task = ClassificationTask(batch_size=64)
dense = task.build_model()
config = Reconstruction("slr", calibration_batches=4, options={"iterations": 30})
sets = PruneSpec.uniform(0.8).resolve(dense)
first = dense.get_submodule(next(iter(sets)).rpartition(".")[0])
def forward(m, b):
    return task.forward(m, b, torch.device("cpu"))


H, _ = layer_gram(dense, first, full_passes(dense, task.calibration_batches(4), forward))
model = copy.deepcopy(dense)
masks, records = reconstruct(model, task, sets, config, log=None)
rank = dist.get_rank()
saved = {"params": {n: p.detach() for n, p in model.named_parameters()}, "masks": dict(masks),
         "inputs": [r["inputs"] for r in records], "H": H}
if rank == 0:  # the same problem in one process (all batches here): what the ranks must agree with
    dist.destroy_process_group()
    saved["single_H"], _ = layer_gram(dense, first, full_passes(dense, task.calibration_batches(4), forward))
    single = copy.deepcopy(dense)
    single_masks, single_records = reconstruct(single, task, sets, config, log=None)
    saved["single"] = {"params": {n: p.detach() for n, p in single.named_parameters()},
                       "masks": dict(single_masks), "inputs": [r["inputs"] for r in single_records]}
else:
    dist.destroy_process_group()
torch.save(saved, out / f"layerwise_rank{rank}.pt")
