# A local stand-in for the official eclipse-mosquitto image, for an engine that
# cannot reach a registry (scripts/setup.sh base-images builds it and tags it
# with the name compose/mosquitto/Dockerfile uses). It is laid out as the
# official one: the configuration at /mosquitto/config/mosquitto.conf, the
# persistence folder /mosquitto/data owned by the mosquitto user (a new named
# volume inherits that), the broker started as root and dropping to that user.
# The broker is Debian's (2.0.11 in bookworm), not the tag's version: what the
# compose tests prove about the files holds for any Mosquitto 2.0.
FROM cloudblock-standin/debian:bookworm
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends mosquitto >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \
 && chown -R mosquitto:mosquitto /mosquitto
VOLUME ["/mosquitto/data", "/mosquitto/log"]
EXPOSE 1883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
