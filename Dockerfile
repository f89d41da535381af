# Lifeline Twin: one image for ingest, the viewer and the CLI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY lifeline lifeline
COPY twin twin
COPY ingest ingest
COPY models models
COPY viewer viewer
COPY simulators simulators
RUN pip install --no-cache-dir . && useradd --system --uid 10001 lifeline
USER lifeline
ENV LIFELINE_HTTP_HOST=0.0.0.0
EXPOSE 8080
CMD ["lifeline", "serve"]
