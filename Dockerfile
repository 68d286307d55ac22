# megatron-video for GPU clusters: NGC PyTorch carries CUDA, cuDNN, NCCL, Transformer Engine, apex
# and DALI matched to its torch build, so only this project and its pure-Python needs are added.
# Build: docker build -t megatron-video:0.1 .     Run: see slurm/ and README.md ("GPU install");
# under Docker pass --ipc=host (curation's encoder processes take clips through /dev/shm).
FROM nvcr.io/nvidia/pytorch:25.10-py3

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    NCCL_NVLS_ENABLE=0

WORKDIR /opt/megatron-video

# Freeze what NGC built together (torch, TE, apex, DALI, triton, flash-attn) so no dependency
# below can replace it with a PyPI build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN pip list --format=freeze \
      | grep -iE '^(torch|triton|transformer[-_]engine|apex|nvidia[-_]dali.*|flash[-_]attn|numpy)==' \
      > /opt/ngc-constraints.txt

COPY setup.py ./
COPY requirements/ requirements/
COPY megatron_video/ megatron_video/
COPY curator/ curator/
COPY kernels/ kernels/
COPY recipes/ recipes/
COPY scripts/ scripts/
COPY slurm/ slurm/
# Python 3.12 in the image: megatron-core installs normally; opencv stays headless 4.x.
RUN pip install -c /opt/ngc-constraints.txt megatron-core==0.19.2 \
 && pip install -c /opt/ngc-constraints.txt -e ".[curate,train,serve]" pynvvideocodec==2.2.4 \
 && pip uninstall -y opencv-python opencv-contrib-python \
 && pip install -c /opt/ngc-constraints.txt --no-deps --force-reinstall opencv-python-headless==4.14.0.94 \
 && python -c "import megatron.core, transformer_engine, nvidia.dali, megatron_video"

ENTRYPOINT ["mvideo"]
CMD ["--help"]
