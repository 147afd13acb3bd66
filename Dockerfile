# fraudstream worker image: `docker run IMAGE stage1 --bootstrap kafka:9092 --metrics-port 9100`.
# Build stage: install the project and its dependencies into a virtualenv.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
RUN pip install . \
 && mkdir -p /app/rules /app/models /app/config \
 && for d in rules models config; do if [ -d "$d" ]; then cp -a "$d/." "/app/$d/"; fi; done

# Runtime stage: the virtualenv, the default rules/models/config, a non-root user.
FROM python:3.11-slim
# xgboost's wheel links OpenMP dynamically.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group fraud
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=fraud:fraud /app /app
WORKDIR /app
USER fraud
EXPOSE 9100
ENTRYPOINT ["fraudstream"]
CMD ["--help"]
