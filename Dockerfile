# Slim runtime image: the gateway only, as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY mappings ./mappings
RUN rm bridge/mappings && cp -r mappings bridge/mappings \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home acvg
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
EXPOSE 8080
ENTRYPOINT ["acvg-bridge"]
CMD ["serve", "--config", "/etc/acvg-bridge/config.yaml", "--listen", "0.0.0.0:8080"]
