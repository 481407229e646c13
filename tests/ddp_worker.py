"""Run under torchrun: SLR training of the digits CNN with DDP; each rank saves its state."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from slr_prune import SLR, PruneSpec
from slr_prune.adapters import ClassificationTask
from slr_prune.engine import TrainConfig, Trainer

out = Path(sys.argv[1])
torch.manual_seed(0)
task = ClassificationTask(batch_size=64)
model = task.build_model()
solver = SLR(model, PruneSpec.uniform(0.8), rho=0.5, rho_growth=1.3)
trainer = Trainer(task, model, TrainConfig(epochs=2, lr=0.02, progress=False, probe_batches=2), solver=solver)
history = trainer.fit()
rank = dist.get_rank()
# Recalibrate BatchNorm from a rank-dependent seed: every rank must still end with the same statistics.
from slr_prune.evaluate import recalibrate_task_bn  # noqa: E402

recalibrate_task_bn(task, model, torch.device("cpu"), batches=2, seed=rank)
bn = {n: b.clone() for n, b in model.named_buffers()}
params = {n: p.detach() for n, p in model.named_parameters()}
torch.save({"params": params, "bn": bn, "solver": solver.state_dict(), "world": dist.get_world_size(),
            "batches": len(task.train_loader(trainer.sampler)),
            "steps_per_epoch": sum(map(solver.due, range(1, solver.batches_per_epoch + 1))),
            "history": history}, out / f"rank{rank}.pt")
dist.destroy_process_group()
