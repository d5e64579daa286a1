# tracejudge: one image for every process of the fleet (worker, scheduler, one-off commands).
#   docker build -t tracejudge .
#   docker run --env-file tracejudge.env tracejudge worker --processes 2 --threads 32
#   docker run --env-file tracejudge.env tracejudge scheduler
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY samplers ./samplers
COPY emulators ./emulators
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    TRACEJUDGE_RUBRICS_DIR=/app/rubrics
COPY --from=build /install /usr/local
RUN useradd --create-home --uid 10001 tracejudge
WORKDIR /app
# Rubrics are data: bake the reviewed, locked set into the image (or mount your own over it).
COPY --chown=tracejudge:tracejudge rubrics ./rubrics
USER tracejudge
EXPOSE 9191
ENTRYPOINT ["tracejudge"]
CMD ["--help"]
