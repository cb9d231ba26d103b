# Two images from one file; docker-compose.yml builds both.
#   api     the API and the migrations: torch from PyTorch's CPU wheel index, so it carries
#           none of the CUDA libraries (about 3 GB of wheels it would never load)
#   worker  training: torch's CUDA build and a C/C++ compiler (below)
FROM python:3.11-slim AS base
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Pango and fonts for the PDF study report (GET /compare/report?format=pdf, WeasyPrint).
RUN apt-get update && apt-get install -y --no-install-recommends libpango-1.0-0 \
    libpangoft2-1.0-0 fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY core core
COPY analysis analysis
COPY demo demo
COPY models models
COPY workers workers
COPY service service
COPY cli cli
COPY migrations migrations
COPY alembic.ini ./

FROM base AS api
# The CPU build of the pinned torch first: `pip install .` then finds torch==2.14.1 satisfied
# (2.14.1+cpu is 2.14.1 with a local label) and fetches no CUDA wheel.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 \
    torchvision==0.29.1 && pip install .
EXPOSE 8000
CMD ["foodlab", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# A compiler is needed at run time by torch.compile: Triton builds a small C launcher for its
# GPU kernels, and Inductor compiles C++ for CPU workers. python:3.11-slim has none.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
# The CUDA build of torch, chosen on purpose. Default: PyPI's torch 2.14.1, the CUDA 13.0
# build: NVIDIA driver R580 or newer; kernels for compute capability 7.5 to 12.x (Turing to
# Blackwell), none for 7.0 (V100). For an older driver, or a V100, build with an older CUDA
# from PyTorch's index, e.g. --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (driver R570+) or .../whl/cu126 (R560+; its builds have kept Volta); README, "GPU workers".
ARG TORCH_INDEX=https://pypi.org/simple
RUN pip install --index-url ${TORCH_INDEX} torch==2.14.1 torchvision==0.29.1 && pip install .
CMD ["foodlab", "worker"]
