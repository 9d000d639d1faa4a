# syntax=docker/dockerfile:1
# kube-mapserver: one image, three entry points (all on PATH, run as uid 10001):
#   kube-mapserver-operator        the Kopf operator (GDAL inspects dataset sources)
#   python -m kms_api              the FastAPI facade
#   kube-mapserver-job <type>      the MapJob runner (GDAL)
# MapServer's services run from their own image (images/mapserver); this one carries Debian's
# mapserver-bin only for the facade's style previews (`mapserv` run as a CGI process per render).
#
# Debian's python3 (3.11) + python3-gdal: GDAL's Python bindings come from Debian, so the venv is
# made with --system-site-packages (like the dev venv, hack/setup.sh). Every Python package is
# pinned by hack/image-constraints.txt and installed from wheels only: the build needs no compiler.
# Pin the base by digest too (debian:12.11-slim@sha256:...) if your policy asks for it.
ARG DEBIAN_IMAGE=debian:12.11-slim

# ---------------------------------------------------------------- ui: the /ui/ page's bundle
# OpenLayers and esbuild from npm at the versions ui/package-lock.json pins (`npm ci`, no install
# scripts), bundled by ui/build.mjs like hack/ui.sh does for a dev checkout. Only the bundle
# (static files) reaches the runtime image, no Node.js.
FROM ${DEBIAN_IMAGE} AS ui
ARG EXTRA_CA_DIR=
ENV DEBIAN_FRONTEND=noninteractive NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && if [ -n "$EXTRA_CA_DIR" ] && [ -d "$EXTRA_CA_DIR" ]; then \
      update-ca-certificates --localcertsdir "$EXTRA_CA_DIR"; fi
WORKDIR /ui
COPY ui/package.json ui/package-lock.json /ui/
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
COPY ui/build.mjs /ui/
COPY ui/src /ui/src
RUN node build.mjs /ui/dist

# ---------------------------------------------------------------- build: venv with the project
FROM ${DEBIAN_IMAGE} AS build
# Extra certificate authorities for the build stage only (a TLS-intercepting proxy in front of PyPI):
# the folder holding them (*.crt) must be visible at this path during RUN steps, e.g.
# `buildah bud -v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro
#  --build-arg EXTRA_CA_DIR=/usr/local/share/ca-certificates` (hack/images.py does this).
# The runtime stage regenerates its bundle without them.
ARG EXTRA_CA_DIR=
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-gdal ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && if [ -n "$EXTRA_CA_DIR" ] && [ -d "$EXTRA_CA_DIR" ]; then \
      update-ca-certificates --localcertsdir "$EXTRA_CA_DIR"; fi
RUN python3 -m venv --system-site-packages /opt/kube-mapserver
WORKDIR /src
COPY hack/image-constraints.txt /src/hack/image-constraints.txt
# dependencies first (a layer that survives source changes)
RUN /opt/kube-mapserver/bin/pip install --only-binary=:all: -c hack/image-constraints.txt \
      $(grep -E '^[A-Za-z0-9_.-]+==' hack/image-constraints.txt | cut -d= -f1)
COPY pyproject.toml README.md /src/
COPY crds/kms_crds /src/crds/kms_crds
COPY operator /src/operator
COPY jobs /src/jobs
COPY api /src/api
COPY --from=ui /ui/dist /src/api/kms_api/ui_static
# the project as a wheel (setuptools lives only in pip's isolated build env, not in the venv)
RUN /opt/kube-mapserver/bin/pip wheel --no-deps -w /tmp/wheels . \
 && /opt/kube-mapserver/bin/pip install --no-deps /tmp/wheels/*.whl

# ---------------------------------------------------------------- runtime: no compilers, no pip
FROM ${DEBIAN_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="kube-mapserver" \
      org.opencontainers.image.description="kube-mapserver operator, API facade and job runner" \
      org.opencontainers.image.source="https://github.com/kube-mapserver/kube-mapserver" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-gdal ca-certificates mapcache-tools mapserver-bin \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && update-ca-certificates --fresh --localcertsdir /nonexistent >/dev/null \
 && groupadd --gid 10001 kms \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kms
COPY --from=build /opt/kube-mapserver /opt/kube-mapserver
# pip is a build tool: the runtime venv does not need it
RUN /opt/kube-mapserver/bin/python -m pip uninstall -y -q pip \
 && rm -f /opt/kube-mapserver/bin/pip*
ENV PATH=/opt/kube-mapserver/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    CPL_TMPDIR=/tmp \
    KMS_DATA_ROOT=/data
# Validation: every entry point imports, GDAL is there, mapscript is not (MapServer pods bring it),
# mapserv and prlimit are (the facade's previews: POST /datasets/preview), and so is the /ui/ bundle.
RUN python -c "import kms_operator.handlers, kms_jobs.cli, kms_crds, kms_api; from osgeo import gdal; print('GDAL', gdal.__version__)" \
 && command -v mapserv >/dev/null && command -v prlimit >/dev/null \
 && python -c "from kms_api.routers.ui import UI_DIR; assert (UI_DIR / 'app.js').is_file(), UI_DIR" \
 && kube-mapserver-job --help >/dev/null \
 && ! python -c "import mapscript" 2>/dev/null \
 && ! command -v gcc >/dev/null && ! command -v cc >/dev/null && ! command -v make >/dev/null
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8080 9090
ENTRYPOINT []
CMD ["kube-mapserver-operator"]
