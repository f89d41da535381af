# Lifeline Twin: one image for ingest, the viewer and the CLI.
FROM python:3.11-slim
# VTK (under pyvista, for the 3D scene) loads these shared libraries even off screen.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libxrender1 libxext6 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lifeline lifeline
COPY twin twin
COPY ingest ingest
COPY models models
COPY viewer viewer
COPY simulators simulators
RUN pip install --no-cache-dir . && useradd --system --uid 10001 lifeline \
    && mkdir /scene /numba-cache && chown lifeline /scene /numba-cache
# /scene: the exported 3D scene; a new named volume mounted there takes this owner.
# The detectors' numba kernels are compiled once here, into a cache the lifeline user can read and write
# (site-packages is not theirs, and a system user has no home for numba's own cache). The image keeps the JIT: an
# ahead-of-time build (models/kernel_aot.py) is for the CPU it was built on, and images move between machines.
ENV NUMBA_CACHE_DIR=/numba-cache
USER lifeline
# From /tmp, so Python imports the installed package (the one `lifeline` runs), not the copies in /app.
RUN cd /tmp && LIFELINE_KERNELS=jit python -c "from models import baseline_kernel as b, sensor_health_kernel as h; h.compile_kernels(); b.compile_kernels()"
ENV LIFELINE_HTTP_HOST=0.0.0.0
EXPOSE 8080
CMD ["lifeline", "serve"]
