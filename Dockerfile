# The operator image: Kopf running pioneer.kube.handlers.
#   docker build -t pioneer-operator:0.1.0 .
# The operator never trains or triages (Jobs do, from trainer-image/): it installs Pioneer without the
# `train` extra, so no torch, transformers or cleanlab (tests/test_operator_image.py keeps it that way).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HF_HOME=/tmp/hf

WORKDIR /opt/pioneer
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install . \
 && python -c "import pioneer.kube.handlers"

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kopf", "run", "-m", "pioneer.kube.handlers"]
CMD ["--standalone", "--all-namespaces"]
