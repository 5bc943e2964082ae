"""The training loop: `train(config, workdir)` — what `python -m leanpo_jax.train` runs.

    data -> global batch -> sharded train step -> metrics.jsonl / TensorBoard / bar
         -> probe (every probe.every) / eval (every eval.every) -> checkpoint (every
         checkpoint.every, the last step, SIGTERM) -> at the end: PNG, WORKDIR/hf export.

Resume: a rerun on the same workdir restores the latest checkpoint (params, optimizer state,
step, rng, data iterator) and continues exactly; only `num_steps`, `logging.*` and the
launch details `distributed.coordinator_address` / `process_id` / `auto` may differ
from the saved config. A rerun of a run already at num_steps writes whichever final artifacts
(PNG, hf/, train_summary.json: train.finalize) an interrupted finish left missing, else does
nothing. Exit codes (via the CLI): 0 done, 1 an error, 3 stopped after
train.max_consecutive_skips non-finite updates, 4 stopped for skipped records (all of a first
batch, or more than data.max_skipped_fraction: data.skip_budget; a checkpoint is saved once
a step was trained), 143 stopped by SIGTERM after saving, 130 stopped by SIGINT (Ctrl-C) after
saving (a second Ctrl-C aborts at once, unsaved). With several processes a signal that reaches
any of them stops all at the same step (train.stopping.AgreedStop), one collective checkpoint,
and the skip budget is judged on the records of all processes.
Console: skipped records are reported on log steps as their count grows, and in the last line.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Dict, Optional, Sequence

import jax
import ml_collections
import numpy as np

from leanpo_jax.data.pipeline import DataPipeline, make_tokenizer
from leanpo_jax.data.skip_budget import SkipBudget, describe_skips
from leanpo_jax.models.runtime import compute_dtype, data_interface, model_source
from leanpo_jax.train import adapter_checkpoints
from leanpo_jax.train import checkpoint as ckpt_lib
from leanpo_jax.train import config as config_lib
from leanpo_jax.train import flops as flops_lib
from leanpo_jax.train import batch_placement, finalize, inputs, log_window, metrics_log, partitioning
from leanpo_jax.train import mesh as mesh_lib
from leanpo_jax.train import process_states, reference, sharded_step, stopping
from leanpo_jax.train.side_passes import SidePasses
from leanpo_jax.train import state as state_lib

# A signal's code is 128 + its number.
EXIT_SKIPS, EXIT_DATA, EXIT_SIGTERM, EXIT_SIGINT = 3, 4, 143, 130


class TrainingStopped(RuntimeError):
    """Training ended early on purpose (non-finite updates, SIGTERM); `exit_code` says which."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def build_model(source, seed: int, mesh):
    """The initial model on the mesh: the checkpoint of `source` (a models.ModelSource) or
    its seeded random init."""
    if source.folder is not None:
        return partitioning.shard_model(source.load(seed=seed), mesh)  # seed: fresh LoRA adapters
    return partitioning.build_sharded(lambda: source.build(seed), mesh)


def _opt_cfg(config, total_steps: int) -> Dict:
    opt = dict(config.optimizer.to_dict())
    opt["total_steps"] = total_steps
    return opt


def _step_cfg(config) -> Dict:
    return {"layout": config.train.layout, "chunk_size": int(config.train.chunk_size),
            "grad_accum_steps": int(config.train.grad_accum_steps), "loss": config.loss.to_dict()}


class Trainer(SidePasses):
    """One training run on one workdir (see the module docstring); `run()` -> summary dict."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, changeable: Sequence[str] = ()):
        """`changeable`: config keys (or blocks) allowed to differ from a checkpoint's, beyond
        config.RESUMABLE_KEYS (the exporter's own mesh and process set)."""
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
            ckpt_lib.check_resume_config(saved, self.flat_config, allowed=config_lib.RESUMABLE_KEYS + tuple(changeable),
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
        # Judged on the records of all processes, through num_steps.
        self.budget = SkipBudget.from_config(
            self.train_data, self.num_steps * int(self.train_data.batch_size) * jax.process_count())

    def _to_device(self, host: Dict[str, np.ndarray]) -> Dict[str, jax.Array]:
        return batch_placement.global_batch(inputs.adapt_batch(host), self.mesh)

    def _initial_state(self, trainable, frozen_params, opt_cfg):
        """TrainState at step 0 on the mesh: `state.initial_state`, the one builder (tests and
        the bench reach it through `state.init_state`). Every array, rng and step too, is a
        global array in the state's shardings, and nothing aliases the model's buffers (the
        first donated step would delete them)."""
        return state_lib.initial_state(trainable, frozen_params, opt_cfg, int(self.config.seed),
                                       mesh=self.mesh, frozen_dtype=self._frozen_dtype())

    def _frozen_dtype(self):
        """A LoRA run's frozen base dtype (model.lora.base_dtype; "auto": bfloat16 on accelerators,
        float32 on CPU); None (as loaded) for full fine-tuning."""
        if not adapter_checkpoints.adapters_only(self.model_def):
            return None
        return compute_dtype(self.config.model.lora.base_dtype, jax.devices()[0].platform)

    # ----------------------------------------------------------------------------- pieces
    def _model(self, state):
        return state_lib.merge_model(self.model_def, state.params["trainable"], state.params["frozen"])

    def _save(self, state, step: int, *, force: bool = False) -> None:
        meta = {"config": self.flat_config, "frozen_weights_from": self.source.folder
                or f"random init: {self.source.where}, seed {self.config.seed}",
                "total_steps": self.total_steps, "process_count": jax.process_count()}
        if adapter_checkpoints.adapters_only(self.model_def):
            meta[adapter_checkpoints.FINGERPRINT_KEY] = self._base_fingerprint()
        # Every host's own iterator state (Orbax writes JSON items from process 0 only).
        data_state = process_states.gather(self.pipeline.get_state())
        self.ckpt.save(step, adapter_checkpoints.saved_part(state, self.model_def), data_state=data_state,
                       meta=meta, force=force)

    def _base_fingerprint(self) -> str:
        return adapter_checkpoints.base_fingerprint(self.source.folder, int(self.config.seed), self.source.config)

    # ----------------------------------------------------------------------------- the run
    def run(self) -> Dict:
        config = self.config
        self._pipelines()
        if self.latest is not None and self.latest >= self.num_steps:
            return self._finish_existing()
        state, start = self._build_state(references=True)
        self.log = metrics_log.MetricsLog(self.workdir, resume_step=start,
                                          tensorboard=bool(config.logging.tensorboard), enabled=self.is_main)
        self.probe_pipeline = self._side_pipeline("probe", "probe")
        self.eval_pipeline = self._side_pipeline("eval", "eval")
        step_cfg = _step_cfg(config)
        self.eval_fn = self._eval_fn(step_cfg)
        return self._loop(state, start, step_cfg)

    def _build_state(self, *, references: bool, step: Optional[int] = None, restore_data: bool = True):
        """(TrainState on the mesh, its step): the initial state, restored from checkpoint `step`
        (default: the latest) when there is one, with the data iterator's position when
        `restore_data`."""
        config = self.config
        model = build_model(self.source, int(config.seed), self.mesh)
        self.model_flops_config = model.config
        self.opt_cfg = _opt_cfg(config, self.total_steps)
        self.opt_cfg["max_consecutive_skips"] = 2**30  # the loop stops first (train.max_consecutive_skips)
        self.model_def, trainable, frozen_params = state_lib.split_model(model, tuple(config.model.frozen_modules))
        self.param_dtypes = jax.tree.map(lambda x: x.dtype, trainable)
        state = self._initial_state(trainable, frozen_params, self.opt_cfg)
        del model, trainable, frozen_params
        self.refs = self._references(self._model(state)) if references else None
        step = self.latest if step is None else step
        if step is not None:
            # The fresh state's arrays already sit in their shardings: restore onto the same.
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                                    adapter_checkpoints.saved_part(state, self.model_def))
            restored, data_state, meta = self.ckpt.restore(abstract, step)
            if adapter_checkpoints.adapters_only(self.model_def):
                adapter_checkpoints.check_base(meta, self._base_fingerprint(), f"{self.ckpt_dir} step {step}")
            state = adapter_checkpoints.with_frozen(restored, state, self.model_def)
            if restore_data:
                self.pipeline.set_state(process_states.select(data_state))
        start = int(jax.device_get(state.step))
        if start and self.is_main and restore_data:
            print(f"[train] resumed from step {start} of {self.workdir}: data position step "
                  f"{self.pipeline.next_step} of {self.pipeline.num_steps}, "
                  f"{self._data_line(self.pipeline.stats())}", flush=True)
        return state, start

    def _data_line(self, stats: Dict) -> str:
        read = stats["ok"] + sum(stats["skipped"].values())
        return describe_skips(read, sum(stats["skipped"].values()), stats["skipped"], self.pipeline.skipped_path)

    def _finish_existing(self) -> Dict:
        """A rerun at num_steps: writes whichever final artifacts are missing (an interrupted
        finish), else says there is nothing to do."""
        step = self.latest
        missing = finalize.missing_artifacts(self.workdir, step, export=bool(self.config.checkpoint.export_hf))
        if not missing:
            message = (f"workdir {self.workdir} is already at step {step} >= num_steps={self.num_steps} "
                       "with every final artifact; nothing to do")
            if self.is_main:
                print(message, flush=True)
            return {"status": "done", "step": step, "message": message}
        if self.is_main:
            print(f"[train] step {step} is trained; finishing its missing artifacts: {', '.join(missing)}",
                  flush=True)
        if finalize.HF_DIRNAME in missing:
            state, _ = self._build_state(references=False)
        else:
            state = None
            self.pipeline.set_state(process_states.select(self.ckpt.restore_data_state(step)))
        self._check_skip_budget(self._agreed_counts(), step)
        rows = [r for r in metrics_log.read_metrics(self.workdir)
                if r.get("kind", "train") == "train" and r["step"] <= step]
        return self._finalize(state, step, rows[-1] if rows else None)

    def _finalize(self, state, step: int, last_row: Optional[Dict]) -> Dict:
        """PNG, HF export (when configured and `state` is given), then train_summary.json last."""
        config = self.config
        plot = metrics_log.plot_curves(self.workdir, title=f"{config.loss.name}, {self.source.where}") \
            if self.is_main else None
        hf_dir = os.path.join(self.workdir, finalize.HF_DIRNAME)
        if config.checkpoint.export_hf and state is not None:
            finalize.export_hf(state.params, self.model_def, self.param_dtypes, self.mesh, hf_dir, step=step,
                               tokenizer=self.pipeline.tokenizer,
                               video_token_index=self.interface.video_token_index,
                               source=self.ckpt_dir)
        stats = self.pipeline.stats()
        summary = {"status": "done", "step": step, "last": last_row, "plot": plot,
                   "hf": hf_dir if config.checkpoint.export_hf else None, "data": stats,
                   "data_summary": self._data_line(stats)}
        if self.is_main:
            inputs.write_json(os.path.join(self.workdir, finalize.SUMMARY_FILENAME), summary)
        self.pipeline.close()
        return summary

    def export(self, step: Optional[int], out: str) -> str:
        """Exports checkpoint `step` (default: the latest) as an HF folder at `out`."""
        self.total_steps = int(self.ckpt.read_meta(step)["total_steps"])
        state, start = self._build_state(references=False, step=self.ckpt.resolve_step(step),
                                         restore_data=False)
        return finalize.export_hf(state.params, self.model_def, self.param_dtypes, self.mesh, out, step=start,
                                  tokenizer=make_tokenizer(self.config.data, self.interface),
                                  video_token_index=self.interface.video_token_index, source=self.ckpt_dir)

    # ----------------------------------------------------------------------------- stopping
    def _agreed_counts(self) -> stopping.Agreement:
        """Records read / skipped by all processes (a blocking collective on several)."""
        stats = self.pipeline.stats()
        skipped = sum(stats["skipped"].values())
        with stopping.AgreedStop(self.mesh, sigint=False) as agree:
            return agree.poll(read=stats["ok"] + skipped, skipped=skipped, wait=True)

    def _stop_if_nothing_usable(self, stop: stopping.AgreedStop, bar) -> None:
        """Before the first step: a first batch without one usable record (on every process)
        stops the run at once, nothing trained or saved."""
        stats = self.pipeline.stats()
        skipped = sum(stats["skipped"].values())
        agreed = stop.poll(read=stats["ok"] + skipped, skipped=skipped, wait=True)
        if agreed.read and agreed.skipped >= agreed.read:
            self._finish_logging(bar)
            self._check_skip_budget(agreed, 0)

    def _check_skip_budget(self, agreed: stopping.Agreement, step: int, *, saved: bool = False) -> None:
        verdict = self.budget.verdict(agreed.read, agreed.skipped, self.pipeline.stats()["skipped"],
                                      self.pipeline.skipped_path)
        if verdict is None:
            return
        where = (f" Checkpoint {step} is saved: after fixing the data, or with a raised "
                 "data.max_skipped_fraction, rerun the same command to continue from it.") if saved else ""
        when = f"stopped at step {step}" if step else "stopped before the first step"
        raise TrainingStopped(f"{when}: {verdict}.{where}", EXIT_DATA)

    def _loop(self, state, start: int, step_cfg) -> Dict:
        """Steps start+1 .. num_steps. Per step the host fetches one small value of the PREVIOUS
        step (the skip counter; with several processes also the agreed stop request and data
        counts), so dispatch stays one step ahead of the device; the metrics stay on the device
        as running (sum, count) sums, fetched on log steps only (train.log_window)."""
        config = self.config
        step_fn = None
        bar = None
        if self.is_main and config.logging.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=self.num_steps, initial=start, desc="train", dynamic_ncols=True)
        say = bar.write if bar is not None else functools.partial(print, flush=True)
        peak = float(config.train.peak_tflops) or flops_lib.device_peak_tflops(jax.devices()[0].device_kind)
        if start == 0:
            self._probe(state, 0)
        procs = jax.process_count()  # throughput: this host's rows stand for every host's
        consecutive = int(jax.device_get(state_lib.skip_counts(state.opt_state)[0]))  # resumed runs
        skips = stopping.SkipLimit(int(config.train.max_consecutive_skips), consecutive)
        window = log_window.LogWindow()
        last_row, step, reported_skips, compiled = None, start, 0, set()
        tick = time.perf_counter()
        with stopping.AgreedStop(self.mesh, sigint=True) as stop:
            while step < self.num_steps:
                host = next(self.pipeline)
                if step == 0:
                    self._stop_if_nothing_usable(stop, bar)
                index = host.pop("record_index")
                if self.refs is not None:
                    host.update(reference.lookup(self.refs["train"], index))
                batch = self._to_device(host)
                if step_fn is None:
                    step_fn = sharded_step.sharded_train_step(self.model_def, step_cfg, self.opt_cfg, state,
                                                              batch, self.mesh)
                shapes = tuple(sorted((k, v.shape) for k, v in batch.items()))
                called = time.perf_counter()
                state, metrics = step_fn(state, batch)
                # A new batch shape compiles inside the call (execution itself is asynchronous).
                compile_s = 0.0 if shapes in compiled else time.perf_counter() - called
                compiled.add(shapes)
                step += 1
                adapted = inputs.adapt_batch(host)
                window.add(metrics, tokens=inputs.batch_tokens(adapted) * procs,
                           pairs=int((host["pair_weight"] > 0).sum()) * procs,
                           flops=flops_lib.batch_step_flops(
                               self.model_flops_config, {k: v.shape for k, v in adapted.items()},
                               layout=config.train.layout, train_vision=self.model_def.trains_vision,
                               responses_per_pair=1 if config.loss.name == "sft" else 2) * procs)
                skipped_in_row = skips.check(metrics["optim/skipped"][0])  # None below the limit
                stats = self.pipeline.stats()
                skipped = sum(stats["skipped"].values())
                last = step == self.num_steps
                agreed = stop.poll(read=stats["ok"] + skipped, skipped=skipped, wait=last)
                log_now = step % int(config.logging.log_every) == 0 or last or skipped_in_row is not None
                probe_now = step % int(config.probe.every) == 0 or last
                eval_now = step % int(config.eval.every) == 0 or last
                bench_every = int(config.eval.benchmark.every)
                bench_now = bench_every > 0 and (step % bench_every == 0 or last)
                save_now = step % int(config.checkpoint.every) == 0 or last
                if log_now or probe_now or eval_now or bench_now or save_now:
                    # Host work follows: this step's compute belongs to the window's time.
                    jax.block_until_ready(metrics)
                now = time.perf_counter()
                window.add_time(now - tick, compile_s=compile_s)
                tick = now
                if log_now:
                    last_row = self.log.write(step, window.row(peak, jax.device_count()))
                    window = log_window.LogWindow()
                    if agreed.skipped > reported_skips and self.is_main:
                        say(f"[data] {self._data_line(stats)}")
                        reported_skips = agreed.skipped
                if bar is not None:
                    shown = last_row or {}
                    bar.set_postfix(loss=shown.get("loss"), margin=shown.get("rewards/margins"),
                                    tok_s=shown.get("tokens_per_s"), refresh=False)
                    bar.update(1)  # redraws with this step's postfix
                if skipped_in_row is not None:
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
                if bench_now:
                    self._benchmark(state, step)
                over_budget = self.budget.verdict(agreed.read, agreed.skipped) is not None
                if save_now or over_budget:
                    self._save(state, step, force=over_budget)
                tick = time.perf_counter()  # probe / eval / checkpoint time is not step time
                if over_budget:
                    self._finish_logging(bar)
                    self.ckpt.wait()
                    self._check_skip_budget(agreed, step, saved=True)
                if agreed.signum and not last:
                    self._save(state, step, force=True)
                    self._finish_logging(bar)
                    self.ckpt.wait()
                    name = stopping.signal_name(agreed.signum)
                    where = "" if stop.flag.signum == agreed.signum else " (it reached another process of this run)"
                    raise TrainingStopped(f"{name}{where}: saved a checkpoint at step {step} in "
                                          f"{self.ckpt_dir}; rerun the same command to continue",
                                          128 + agreed.signum)
        self.ckpt.wait()
        self._finish_logging(bar)
        return self._finalize(state, step, last_row)

    def _finish_logging(self, bar) -> None:
        if bar is not None:
            bar.close()
        if getattr(self, "log", None) is not None:
            self.log.close()


def train(config: ml_collections.ConfigDict, workdir: str) -> Dict:
    """Runs (or resumes) training on `workdir`; see the module docstring."""
    return Trainer(config, workdir).run()
