"""The trainer's passes beside the train step: DPO reference log-probs, the probe, the eval.

    class Trainer(SidePasses): ...   # uses self.config, .mesh, .workdir, .interface, .pipeline,
                                     # .model_def, .log, .refs, .is_main, ._model, ._to_device

The probe scores WORKDIR's held-out records with the current model (log-probs, margins); the
eval runs the training loss on them; the benchmark (eval.benchmark.every) answers a video
benchmark's questions with it; DPO's references are the initial model's log-probs of the
training (and eval) records, computed once and cached in WORKDIR/reference/.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from leanpo_jax import losses
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.models.scoring import score_pairs
from leanpo_jax.train import inputs, reference
from leanpo_jax.train import step as step_lib


class SidePasses:
    """Mixin of `train.trainer.Trainer` (see the module docstring)."""

    def _side_pipeline(self, which: str, tag: str):
        data = inputs.side_data(self.config, self.workdir, which)
        if data is None:
            return None
        path = os.path.join(self.workdir, f"skipped_records.{tag}.jsonl")
        # The training pipeline's tokenizer: probe / eval / references tokenise as training does.
        return lambda: DataPipeline(data, model=self.interface, train=False, tokenizer=self.pipeline.tokenizer,
                                    skipped_path=path if self.is_main else None)

    def _score(self, pipe, model) -> Dict[str, np.ndarray]:
        """Scores every record of an eval-mode pipeline (closed afterwards), on the mesh."""
        with pipe, jax.set_mesh(self.mesh):
            return score_pairs(model, pipe, num_records=len(pipe.source),
                                       layout=self.config.train.layout,
                                       chunk_size=int(self.config.train.chunk_size),
                                       to_device=self._to_device)

    def _references(self, model) -> Optional[Dict]:
        """DPO: reference log-probs of the initial model for the training (and eval) records."""
        if self.config.loss.name != "dpo":
            return None
        weights = reference.weights_identity(self.config.model.init_from, self.config.seed,
                                             repr(model.config))
        refs = {}
        for tag, data in (("train", self.train_data),
                          ("eval", inputs.side_data(self.config, self.workdir, "eval"))):
            if data is None:
                continue
            keys = {k: data[k] for k in ("num_frames", "max_prompt_text_tokens", "max_response_tokens",
                                         "video_root")}
            keys.update(tokenizer=self.pipeline.tokenizer.where, template=repr(self.interface.template))
            key = reference.cache_key(data.pairs, keys, weights)
            path = os.path.join(self.workdir, f"skipped_records.reference_{tag}.jsonl")
            refs[tag] = reference.reference_logps(
                lambda pipe: self._score(pipe, model),
                lambda d=data, p=path: DataPipeline(d, model=self.interface, train=False,
                                                    tokenizer=self.pipeline.tokenizer, skipped_path=p),
                key=key, cache_dir=os.path.join(self.workdir, "reference"), write=self.is_main)
        return refs

    def _probe(self, state, step: int) -> Optional[Dict]:
        if self.probe_pipeline is None:
            return None
        scores = self._score(self.probe_pipeline(), self._model(state))
        beta = float(self.config.loss.beta)
        keep = ~np.isnan(scores["chosen"])
        row = {f"probe/logps/{k}": float(np.mean(scores[k][keep]))
               for k in ("chosen", "rejected", "chosen_avg", "rejected_avg")}
        row["probe/rewards/margins"] = beta * (row["probe/logps/chosen_avg"] - row["probe/logps/rejected_avg"])
        row["probe/pairs"] = int(keep.sum())
        return self.log.write(step, row, kind="probe")

    def _eval(self, state, step: int) -> Optional[Dict]:
        if self.eval_pipeline is None:
            return None
        total = None
        refs = (self.refs or {}).get("eval")
        with self.eval_pipeline() as pipe:
            for host in pipe:
                index = host.pop("record_index")
                if refs is not None:
                    host.update(reference.lookup(refs, index))
                with jax.set_mesh(self.mesh):
                    metrics = jax.device_get(self.eval_fn(state.params, self._to_device(host)))
                total = metrics if total is None else losses.sum_metrics(total, metrics)
        row = {f"eval/{k}": float(v) for k, v in losses.reduce_metrics(total).items()}
        return self.log.write(step, row, kind="eval")

    def _benchmark(self, state, step: int) -> Optional[Dict]:
        """eval.benchmark on the current model (leanpo_jax/eval/run.py): its files under
        WORKDIR/benchmark/step_N, "eval/<task>/accuracy" (and the task's headline figure, e.g.
        M-avg) in metrics.jsonl. A rerun of the same step resumes that folder."""
        b = self.config.eval.benchmark
        if not int(b.every) or not b.task:
            return None
        from leanpo_jax.eval.run import Evaluator  # pylint: disable=import-outside-toplevel

        out = os.path.join(self.workdir, "benchmark", f"step_{step:06d}")
        model = self._model(state)
        evaluator = getattr(self, "_benchmark_evaluator", None)
        if evaluator is None:  # built once: later calls reuse its compiled sampler
            evaluator = self._benchmark_evaluator = Evaluator(self.config, model=model, interface=self.interface,
                                                              tokenizer=self.pipeline.tokenizer)
        else:
            evaluator.use_model(model)
        with jax.set_mesh(self.mesh):
            result = evaluator.run(out, progress=False)
        row = {f"eval/{b.task}/accuracy": result["accuracy"], f"eval/{b.task}/questions": result["total"]}
        headline = result.get("headline", "accuracy")
        if headline != "accuracy" and result.get(headline) is not None:
            row[f"eval/{b.task}/{headline}"] = result[headline]
        return self.log.write(step, row, kind="benchmark")

    def _eval_fn(self, step_cfg):
        """The jitted eval loss of a batch, pair-weighted so that batches add up exactly."""
        def evaluate(params, batch):
            batch = step_lib.normalize_batch(batch, self.model_def.config)
            loss, metrics = step_lib.loss_fn(params["trainable"], params["frozen"], batch,
                                             model_def=self.model_def, cfg=step_cfg)
            pairs = batch["pair_weight"].astype(jnp.float32).sum()
            return {**metrics, "loss": (loss * pairs, pairs)}  # pair-weighted across batches

        return jax.jit(evaluate)
