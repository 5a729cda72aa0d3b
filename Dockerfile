# The operator image: Kopf running pioneer.kube.handlers.
#   docker build -t pioneer-operator:0.1.0 .
# The operator never trains (Jobs do, from trainer-image/), so it gets the small CPU build of torch.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HF_HOME=/tmp/hf

WORKDIR /opt/pioneer
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install . \
 && python -c "import pioneer.kube.handlers"

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["kopf", "run", "-m", "pioneer.kube.handlers"]
CMD ["--standalone", "--all-namespaces"]
