# gitops-acp: the reconciler in a slim image. Build: docker build -t gitops-acp .
# Run: docker run -v /path/to/repo:/repo -v /path/to/secrets:/secrets:ro gitops-acp
# A remote: docker run -v acp-cache:/cache -v ...:/secrets:ro gitops-acp --repo https://... serve
#   --secrets-dir /secrets (its mirror in /cache is durable state: a persistent volume, docs/remotes.md)
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gitops_acp ./gitops_acp
COPY example-repo ./example-repo
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# git: the store is a git repository; tini: signals reach the reconciler (SIGTERM finishes the
# checkpoint in flight and exits 0) and zombie MCP server processes are reaped; openssh-client: a
# remote over SSH with a deploy key (git only recommends it, so --no-install-recommends leaves it out).
# Debian's security updates replace pinned versions, so apt packages are not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
RUN useradd --create-home --uid 10001 acp \
    && git config --system --add safe.directory '*' \
    && mkdir /secrets /cache \
    && chown 10001 /cache
USER 10001
WORKDIR /home/acp
ENV PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/cache
VOLUME ["/repo", "/cache"]
ENTRYPOINT ["tini", "--", "gitops-acp"]
CMD ["--repo", "/repo", "serve", "--secrets-dir", "/secrets"]
