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
    && mkdir /scene && chown lifeline /scene
# /scene: the exported 3D scene; a new named volume mounted there takes this owner.
USER lifeline
ENV LIFELINE_HTTP_HOST=0.0.0.0
EXPOSE 8080
CMD ["lifeline", "serve"]
