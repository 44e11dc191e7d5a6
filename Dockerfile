# The image of the one shardgate binary, from scratch (nothing is pulled).
# Build it with
#
#   bash config/docker/build-image.sh [TAG]        # default shardgate:latest
#
# which compiles the static binary (x86_64-unknown-linux-musl, mimalloc as
# its allocator), stages this file's build context in target/docker-context:
#   rootfs/  /shardgate, /etc/ssl/certs/ca-certificates.crt, /etc/passwd and
#            /etc/group (user and group shardgate, 10001)
#   data/    the empty /data, owned by 10001
# and runs `docker build` on it. Docker's legacy builder is enough.
#
# Configure a container with a deployment file (SHARDGATE_CONFIG=/path, or
# `serve --config /path`) and/or SHARDGATE_<TABLE>__<KEY> variables; with no
# file, the variables alone are the config (e.g. SHARDGATE_NODE__LISTEN).
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 data/ /data/
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# proxy, node, meta (the ports of config/compose/)
EXPOSE 7000 7100 7101
# `shardgate probe` GETs /readyz of every role the config enables: no shell.
HEALTHCHECK --interval=2s --timeout=3s --start-period=60s --retries=3 CMD ["/shardgate", "probe"]
ENTRYPOINT ["/shardgate"]
CMD ["serve"]
