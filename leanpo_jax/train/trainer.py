"""The training loop: `train(config, workdir)` — what `python -m leanpo_jax.train` runs.

    data -> global batch -> sharded train step -> metrics.jsonl / TensorBoard / bar
         -> probe (every probe.every) / eval (every eval.every) -> checkpoint (every
         checkpoint.every, the last step, SIGTERM) -> at the end: PNG, WORKDIR/hf export.

Resume: a rerun on the same workdir restores the latest checkpoint (params, optimizer state,
step, rng, data iterator) and continues exactly; only `num_steps`, `logging.*` and the
launch details `distributed.coordinator_address` / `process_id` / `auto` may differ
from the saved config. A run already at num_steps does nothing. Exit codes (via the CLI):
0 done, 1 an error, 3 stopped after train.max_consecutive_skips non-finite updates,
143 stopped by SIGTERM after saving, 130 stopped by SIGINT (Ctrl-C) after saving (a second
Ctrl-C aborts at once, unsaved). With several processes a signal that reaches any of them
stops all at the same step (train.stopping.AgreedStop), one collective checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from leanpo_jax import losses
from leanpo_jax.data.pipeline import DataPipeline
from leanpo_jax.data.tokenize import save_tokenizer_files
from leanpo_jax.models import save_hf
from leanpo_jax.models.runtime import data_interface, model_source
from leanpo_jax.models.scoring import score_pairs
from leanpo_jax.train import checkpoint as ckpt_lib
from leanpo_jax.train import config as config_lib
from leanpo_jax.train import flops as flops_lib
from leanpo_jax.train import batch_placement, inputs, metrics_log, partitioning, reference, sharded_step
from leanpo_jax.train import mesh as mesh_lib
from leanpo_jax.train import process_states, stopping
from leanpo_jax.train import state as state_lib
from leanpo_jax.train import step as step_lib

EXIT_SKIPS, EXIT_SIGTERM, EXIT_SIGINT = 3, 143, 130  # a signal's code is 128 + its number


def _new_window() -> Dict:
    """Accumulators of the steps since the last logged row: host counters, and the metrics'
    running (sum, count) sums plus the last step's metrics, both still on the device."""
    return {"tokens": 0, "pairs": 0, "flops": 0.0, "steps": 0, "time": 0.0, "metrics": None, "last": None}


class TrainingStopped(RuntimeError):
    """Training ended early on purpose (non-finite updates, SIGTERM); `exit_code` says which."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def build_model(source, seed: int, mesh):
    """The initial model on the mesh: the checkpoint of `source` (a models.ModelSource) or
    its seeded random init."""
    if source.folder is not None:
        return partitioning.shard_model(source.load(), mesh)
    return partitioning.build_sharded(lambda: source.build(seed), mesh)


def _opt_cfg(config, total_steps: int) -> Dict:
    opt = dict(config.optimizer.to_dict())
    opt["total_steps"] = total_steps
    return opt


def _step_cfg(config) -> Dict:
    return {"layout": config.train.layout, "chunk_size": int(config.train.chunk_size),
            "grad_accum_steps": int(config.train.grad_accum_steps), "loss": config.loss.to_dict()}


class Trainer:
    """One training run on one workdir (see the module docstring); `run()` -> summary dict."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        mesh_lib.maybe_initialize_distributed(config)
        self.config, self.workdir = config, os.path.abspath(workdir)
        self.platform = jax.devices()[0].platform
        self.is_main = jax.process_index() == 0
        config_lib.validate(config, num_devices=jax.device_count(), process_count=jax.process_count())
        # The model decides what the data side needs: frames, template, tokenizer.
        self.source = model_source(config.model, self.platform)
        self.interface = data_interface(self.source, config.data)
        os.makedirs(self.workdir, exist_ok=True)
        self.mesh = mesh_lib.mesh_from_config(config)
        self.ckpt = ckpt_lib.Checkpointer(os.path.join(self.workdir, "checkpoints"),
                                          max_to_keep=int(config.checkpoint.max_to_keep),
                                          async_save=bool(config.checkpoint.async_save))
        self.flat_config = ckpt_lib.flatten_config(config)
        self.latest = self.ckpt.latest_step()
        if self.latest is not None:
            saved = self.ckpt.read_meta(self.latest)["config"]
            ckpt_lib.check_resume_config(saved, self.flat_config, allowed=config_lib.RESUMABLE_KEYS,
                                         directory=self.ckpt_dir)

    @property
    def ckpt_dir(self) -> str:
        return os.path.join(self.workdir, "checkpoints")

    # ----------------------------------------------------------------------------- setup
    def _pipelines(self):
        self.train_data = inputs.training_data(self.config, self.workdir)
        self.pipeline = DataPipeline(self.train_data, model=self.interface, train=True, workdir=self.workdir)
        if self.is_main and self.pipeline.skipped_path and not os.path.exists(self.pipeline.skipped_path):
            # Present even when empty: "no record was skipped" is visible, not implied.
            open(self.pipeline.skipped_path, "a", encoding="utf-8").close()
        data_steps = self.pipeline.num_steps
        total = self.config.total_steps if self.config.total_steps != -1 else data_steps
        num = self.config.num_steps if self.config.num_steps != -1 else total
        if total > data_steps:
            raise ValueError(
                f"total_steps={total} but the data gives {data_steps} steps ({self.pipeline.records_total} "
                f"records / global batch); raise data.num_epochs or lower total_steps")
        if num > total:
            raise ValueError(f"num_steps={num} exceeds total_steps={total}")
        self.total_steps, self.num_steps = int(total), int(num)

    def _side_pipeline(self, which: str, tag: str):
        data = inputs.side_data(self.config, self.workdir, which)
        if data is None:
            return None
        path = os.path.join(self.workdir, f"skipped_records.{tag}.jsonl")
        # The training pipeline's tokenizer: probe / eval / references tokenise as training does.
        return lambda: DataPipeline(data, model=self.interface, train=False, tokenizer=self.pipeline.tokenizer,
                                    skipped_path=path if self.is_main else None)

    def _to_device(self, host: Dict[str, np.ndarray]) -> Dict[str, jax.Array]:
        return batch_placement.global_batch(inputs.adapt_batch(host), self.mesh)

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

    def _initial_state(self, trainable, frozen_params, opt_cfg):
        """TrainState at step 0 on the mesh: `state.initial_state`, the one builder (tests and
        the bench reach it through `state.init_state`). Every array, rng and step too, is a
        global array in the state's shardings, and nothing aliases the model's buffers (the
        first donated step would delete them)."""
        return state_lib.initial_state(trainable, frozen_params, opt_cfg, int(self.config.seed),
                                       mesh=self.mesh)

    # ----------------------------------------------------------------------------- pieces
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

    def _model(self, state):
        return state_lib.merge_model(self.model_def, state.params["trainable"], state.params["frozen"])

    def _save(self, state, step: int, *, force: bool = False) -> None:
        meta = {"config": self.flat_config, "frozen_weights_from": self.source.folder
                or f"random init: {self.source.where}, seed {self.config.seed}",
                "total_steps": self.total_steps, "process_count": jax.process_count()}
        # Every host's own iterator state (Orbax writes JSON items from process 0 only).
        data_state = process_states.gather(self.pipeline.get_state())
        self.ckpt.save(step, state, data_state=data_state, meta=meta, force=force)

    def _export(self, state) -> str:
        replicated = NamedSharding(self.mesh, PartitionSpec())
        with jax.set_mesh(self.mesh):
            params = jax.jit(lambda p: p, out_shardings=replicated)(state.params)
        trainable = jax.tree.map(lambda x, d: x.astype(d), params["trainable"], self.param_dtypes)
        model = state_lib.merge_model(self.model_def, trainable, params["frozen"])
        out = os.path.join(self.workdir, "hf")
        if self.is_main:
            tokenizer = self.pipeline.tokenizer
            index = self.interface.video_token_index
            # The placeholder's text in the training tokenizer goes into config.json, so the
            # exported folder's tokenizer and config agree when it is loaded again.
            token = None if index is None else tokenizer.tokenizer.id_to_token(index)
            save_hf(model, out, **({} if token is None else {"video_token": token}))
            # The training tokenizer beside the weights: the folder is a complete model for
            # transformers (AutoTokenizer) and as data.tokenizer for generation here.
            save_tokenizer_files(tokenizer.where, out)
        return out

    # ----------------------------------------------------------------------------- the loop
    def run(self) -> Dict:
        config = self.config
        self._pipelines()
        if self.latest is not None and self.latest >= self.num_steps:
            message = f"workdir {self.workdir} is already at step {self.latest} >= num_steps={self.num_steps}; nothing to do"
            if self.is_main:
                print(message, flush=True)
            return {"status": "done", "step": self.latest, "message": message}
        model = build_model(self.source, int(config.seed), self.mesh)
        self.model_flops_config = model.config
        opt_cfg = _opt_cfg(config, self.total_steps)
        opt_cfg["max_consecutive_skips"] = 2**30  # the loop stops first (train.max_consecutive_skips)
        frozen = tuple(config.model.frozen_modules)
        self.model_def, trainable, frozen_params = state_lib.split_model(model, frozen)
        self.param_dtypes = jax.tree.map(lambda x: x.dtype, trainable)
        state = self._initial_state(trainable, frozen_params, opt_cfg)
        del model, trainable, frozen_params
        self.refs = self._references(self._model(state))
        if self.latest is not None:
            # The fresh state's arrays already sit in their shardings: restore onto the same.
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
            state, data_state, _ = self.ckpt.restore(abstract, self.latest)
            self.pipeline.set_state(process_states.select(data_state))
        start = int(jax.device_get(state.step))
        self.log = metrics_log.MetricsLog(self.workdir, resume_step=start,
                                          tensorboard=bool(config.logging.tensorboard), enabled=self.is_main)
        self.probe_pipeline = self._side_pipeline("probe", "probe")
        self.eval_pipeline = self._side_pipeline("eval", "eval")
        step_cfg = _step_cfg(config)
        def evaluate(params, batch):
            batch = step_lib.normalize_batch(batch, self.model_def.config)
            loss, metrics = step_lib.loss_fn(params["trainable"], params["frozen"], batch,
                                             model_def=self.model_def, cfg=step_cfg)
            pairs = batch["pair_weight"].astype(jnp.float32).sum()
            return {**metrics, "loss": (loss * pairs, pairs)}  # pair-weighted across batches

        self.eval_fn = jax.jit(evaluate)
        return self._loop(state, start, step_cfg, opt_cfg)

    def _loop(self, state, start: int, step_cfg, opt_cfg) -> Dict:
        """Steps start+1 .. num_steps. Per step the host fetches one scalar of the PREVIOUS step
        (the skip counter; with several processes also the agreed stop signal), so dispatch
        stays one step ahead of the device; the metrics stay on the device as running (sum,
        count) sums and are fetched on log steps only (train.stopping)."""
        config = self.config
        step_fn = None
        bar = None
        if self.is_main and config.logging.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=self.num_steps, initial=start, desc="train", dynamic_ncols=True)
        peak = float(config.train.peak_tflops) or flops_lib.device_peak_tflops(jax.devices()[0].device_kind)
        if start == 0:
            self._probe(state, 0)
        procs = jax.process_count()  # throughput: this host's rows stand for every host's
        add_metrics = jax.jit(losses.sum_metrics)  # one dispatch per step, not one per metric
        consecutive = int(jax.device_get(state_lib.skip_counts(state.opt_state)[0]))  # resumed runs
        skips = stopping.SkipLimit(int(config.train.max_consecutive_skips), consecutive)
        window = _new_window()
        last_row, step = None, start
        tick = time.perf_counter()
        with stopping.AgreedStop(self.mesh, sigint=True) as stop:
            while step < self.num_steps:
                host = next(self.pipeline)
                index = host.pop("record_index")
                if self.refs is not None:
                    host.update(reference.lookup(self.refs["train"], index))
                batch = self._to_device(host)
                if step_fn is None:
                    step_fn = sharded_step.sharded_train_step(self.model_def, step_cfg, opt_cfg, state,
                                                              batch, self.mesh)
                state, metrics = step_fn(state, batch)
                step += 1
                adapted = inputs.adapt_batch(host)
                window["flops"] += flops_lib.batch_step_flops(
                    self.model_flops_config, {k: v.shape for k, v in adapted.items()},
                    layout=config.train.layout, train_vision=self.model_def.trains_vision,
                    responses_per_pair=1 if config.loss.name == "sft" else 2) * procs
                window["tokens"] += inputs.batch_tokens(adapted) * procs
                window["pairs"] += int((host["pair_weight"] > 0).sum()) * procs
                window["steps"] += 1
                window["last"] = metrics
                window["metrics"] = metrics if window["metrics"] is None else add_metrics(window["metrics"], metrics)
                skipped_in_row = skips.check(metrics["optim/skipped"][0])  # None below the limit
                stop_skips = skipped_in_row is not None
                log_now = step % int(config.logging.log_every) == 0 or step == self.num_steps or stop_skips
                probe_now = step % int(config.probe.every) == 0 or step == self.num_steps
                eval_now = step % int(config.eval.every) == 0 or step == self.num_steps
                save_now = step % int(config.checkpoint.every) == 0 or step == self.num_steps
                if log_now or probe_now or eval_now or save_now:
                    # Host work follows: this step's compute belongs to the window's time.
                    jax.block_until_ready(metrics)
                now = time.perf_counter()
                window["time"] += now - tick
                tick = now
                if log_now:
                    last_row = self._log_window(step, window, peak)
                    window = _new_window()
                if bar is not None:
                    shown = last_row or {}
                    bar.update(1)
                    bar.set_postfix(loss=shown.get("loss"), margin=shown.get("rewards/margins"),
                                    tok_s=shown.get("tokens_per_s"), refresh=False)
                if stop_skips:
                    self._finish_logging(bar)
                    self.ckpt.wait()
                    raise TrainingStopped(
                        f"stopped at step {step}: {skipped_in_row} non-finite updates in a row "
                        f"(train.max_consecutive_skips={config.train.max_consecutive_skips}); parameters "
                        f"were not updated by them. The last good checkpoint "
                        f"(step {self.ckpt.latest_step()}) is kept in {self.ckpt_dir}. Check the data "
                        "around these steps and the learning rate.", EXIT_SKIPS)
                if probe_now:
                    self._probe(state, step)
                if eval_now:
                    self._eval(state, step)
                if save_now:
                    self._save(state, step)
                tick = time.perf_counter()  # probe / eval / checkpoint time is not step time
                signum = stop.poll()  # the same on every process at this step
                if signum and step < self.num_steps:
                    self._save(state, step, force=True)
                    self._finish_logging(bar)
                    self.ckpt.wait()
                    name = stopping.signal_name(signum)
                    where = "" if stop.flag.signum == signum else " (it reached another process of this run)"
                    raise TrainingStopped(f"{name}{where}: saved a checkpoint at step {step} in "
                                          f"{self.ckpt_dir}; rerun the same command to continue", 128 + signum)
        self.ckpt.wait()
        self._finish_logging(bar)
        plot = metrics_log.plot_curves(self.workdir, title=f"{config.loss.name}, {self.source.where}") \
            if self.is_main else None
        hf_dir = self._export(state) if config.checkpoint.export_hf else None
        summary = {"status": "done", "step": step, "last": last_row, "plot": plot, "hf": hf_dir,
                   "data": self.pipeline.stats()}
        if self.is_main:
            inputs.write_json(os.path.join(self.workdir, "train_summary.json"), summary)
        self.pipeline.close()
        return summary

    def _log_window(self, step: int, window: Dict, peak: Optional[float]) -> Dict:
        """The window's row: its metric sums and last-step counters fetched in one device_get."""
        sums, last = jax.device_get((window["metrics"], window["last"]))
        row = {k: float(v) for k, v in losses.reduce_metrics(sums).items()}
        # Counters and the learning rate are "as of this step", not window averages.
        for k in ("optim/skipped", "optim/skipped_total", "optim/lr"):
            row[k] = float(last[k][0])
        seconds = max(window["time"], 1e-9)
        row["tokens_per_s"] = window["tokens"] / seconds
        row["pairs_per_s"] = window["pairs"] / seconds
        row["step_time_s"] = seconds / max(window["steps"], 1)
        row["mfu"] = window["flops"] / seconds / (peak * 1e12 * jax.device_count()) if peak else None
        return self.log.write(step, row)

    def _finish_logging(self, bar) -> None:
        if bar is not None:
            bar.close()
        if getattr(self, "log", None) is not None:
            self.log.close()


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict:
    """Runs (or resumes) training on `workdir`; see the module docstring."""
    return Trainer(config, workdir).run()
