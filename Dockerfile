# fairgate, the fairness release gate, as a container image.
#
#   docker build -t fairgate .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" fairgate \
#     check --policy policy.yaml --data audit.parquet \
#           --teacher teacher.onnx --student student.onnx --no-mlflow
#
# Exit codes pass through: 0 pass, 1 gate failed, 2 usage/policy, 3 input, 4 internal.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/fairgate/bin:$PATH

# The build context holds only what `pip install` needs (see .dockerignore).
COPY . /src
RUN python -m venv /opt/fairgate \
 && /opt/fairgate/bin/python -m pip install "/src[text,image]" \
 && rm -rf /src \
 && fairgate --version

# A numeric, non-root user (so `runAsNonRoot` can verify it) that owns /work.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin fairgate \
 && mkdir -p /work \
 && chown 10001:10001 /work
USER 10001:10001
WORKDIR /work

ENTRYPOINT ["fairgate"]
CMD ["--help"]
