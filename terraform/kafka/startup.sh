#!/usr/bin/env bash
# Startup script of the Kafka VM: installs a pinned Apache Kafka broker in KRaft mode (one node,
# broker and controller in one JVM) as a systemd service whose data lives on the persistent disk,
# and creates the platform's topic. It runs at every boot and every step is idempotent, so a
# reboot or a replaced boot disk converges to the same broker with the same data.
#
# Every setting comes from an environment variable when set, else from the instance metadata
# attribute Terraform writes (kafka.tf), else from the default below. The paths all sit under
# KAFKA_ROOT, and SYSTEMCTL replaces systemctl, so the same steps can run against a scratch folder.
#
# This is the one definition of the single-node broker, for the VM and the laptop alike:
#   startup.sh                    every step of STEPS below, in order (what the VM runs at boot)
#   startup.sh STEP...            only the named steps, e.g. `install_jars write_config
#                                 format_storage`; `print_broker_command` prints the broker's
#                                 command line (the unit's ExecStart), each argument NUL-terminated
# `python -m localstack up` (localstack/kafka_broker.py) runs named steps with KAFKA_ROOT under
# the state folder, then starts that command itself.
set -euo pipefail

METADATA_URL="${METADATA_URL:-http://metadata.google.internal/computeMetadata/v1/instance}"

# setting VARIABLE ATTRIBUTE DEFAULT: the variable's value, else the metadata attribute, else DEFAULT.
setting() {
    local variable="$1" attribute="$2" default="$3" value
    if [[ -n "${!variable+set}" ]]; then
        printf '%s' "${!variable}"
    elif value="$(metadata "attributes/${attribute}")"; then
        printf '%s' "${value}"
    else
        printf '%s' "${default}"
    fi
}

metadata() {
    curl --silent --fail --max-time 5 -H "Metadata-Flavor: Google" "${METADATA_URL}/$1"
}

log() {
    echo "kafka-startup: $*" >&2
}

KAFKA_ROOT="$(setting KAFKA_ROOT kafka-root "")"
MAVEN_REPOSITORY="$(setting KAFKA_MAVEN_REPOSITORY kafka-maven-repository https://repo.maven.apache.org/maven2)"
LISTEN_HOST="$(setting KAFKA_LISTEN_HOST kafka-listen-host 0.0.0.0)"
PORT="$(setting KAFKA_PORT kafka-port 9092)"
CONTROLLER_PORT="$(setting KAFKA_CONTROLLER_PORT kafka-controller-port 9093)"
TOPIC="$(setting KAFKA_TOPIC kafka-topic devices)"
TOPIC_PARTITIONS="$(setting KAFKA_TOPIC_PARTITIONS kafka-topic-partitions 4)"
RETENTION_HOURS="$(setting KAFKA_RETENTION_HOURS kafka-retention-hours 168)"
HEAP_OPTS="$(setting KAFKA_HEAP_OPTS kafka-heap-opts -Xmx2g)"
DATA_DEVICE="$(setting KAFKA_DATA_DEVICE kafka-data-device /dev/disk/by-id/google-kafka-data)"
# Kafka's own default; consumers that join a group alone (the laptop's tests) need not wait.
GROUP_INITIAL_REBALANCE_DELAY_MS="$(setting KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS kafka-group-initial-rebalance-delay-ms 3000)"
# The broker's own log file: rolled at this size, this many old files kept.
APP_LOG_FILE_SIZE="$(setting KAFKA_APP_LOG_FILE_SIZE kafka-app-log-file-size 50MB)"
APP_LOG_FILES="$(setting KAFKA_APP_LOG_FILES kafka-app-log-files 5)"
SERVICE_USER="$(setting KAFKA_USER kafka-user kafka)"
SYSTEMCTL="${SYSTEMCTL:-systemctl}"

INSTALL_DIR="${KAFKA_ROOT}/opt/kafka"
LIBS_DIR="${INSTALL_DIR}/libs"
CONFIG_DIR="${KAFKA_ROOT}/etc/kafka"
DATA_MOUNT="${KAFKA_ROOT}/var/lib/kafka"
# A subfolder: the root of a freshly formatted disk holds lost+found, which Kafka would take
# for a broken partition folder.
LOG_DIRS="${DATA_MOUNT}/logs"
APP_LOG_DIR="${KAFKA_ROOT}/var/log/kafka"
UNIT_FILE="${KAFKA_ROOT}/etc/systemd/system/kafka.service"

# The JVM options of every Kafka class the script runs, the broker's included.
read -r -a HEAP <<<"${HEAP_OPTS}"
JVM_OPTIONS=(
    "${HEAP[@]}" -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=${CONFIG_DIR}/log4j2.properties" -cp "${LIBS_DIR}/*"
)

install_java() {
    if command -v java >/dev/null; then
        return
    fi
    log "installing Java 17"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless
}

# The persistent disk keeps the topic when the VM or its boot disk is replaced: formatted only
# when it has no file system yet, mounted by UUID so device renaming cannot swap disks.
mount_data_disk() {
    mkdir -p "${DATA_MOUNT}"
    if [[ -z "${DATA_DEVICE}" ]]; then
        log "no data device configured: data stays on the boot disk"
        return
    fi
    if ! blkid "${DATA_DEVICE}" >/dev/null; then
        log "formatting ${DATA_DEVICE}"
        mkfs.ext4 -q -F -m 0 "${DATA_DEVICE}"
    fi
    if ! mountpoint -q "${DATA_MOUNT}"; then
        mount -o discard,defaults "${DATA_DEVICE}" "${DATA_MOUNT}"
    fi
    local uuid
    uuid="$(blkid -s UUID -o value "${DATA_DEVICE}")"
    if ! grep -q "UUID=${uuid}" "${KAFKA_ROOT}/etc/fstab" 2>/dev/null; then
        echo "UUID=${uuid} ${DATA_MOUNT} ext4 discard,defaults,nofail 0 2" >>"${KAFKA_ROOT}/etc/fstab"
    fi
}

ensure_service_user() {
    if ! id "${SERVICE_USER}" >/dev/null 2>&1; then
        useradd --system --no-create-home --shell /usr/sbin/nologin "${SERVICE_USER}"
    fi
}

# The jar list: a file given by KAFKA_JARS_LOCK_FILE, else the metadata attribute kafka-jars-lock.
jars_lock() {
    if [[ -n "${KAFKA_JARS_LOCK_FILE:-}" ]]; then
        cat "${KAFKA_JARS_LOCK_FILE}"
    else
        metadata "attributes/kafka-jars-lock"
    fi
}

# Downloads every jar of the lock that is missing or differs, and checks each against its sha256;
# jars not in the lock (an older version) are removed so that one version is on the classpath.
install_jars() {
    local lock wanted="" maven_path digest jar
    lock="$(jars_lock)"
    mkdir -p "${LIBS_DIR}"
    while read -r maven_path digest; do
        [[ -z "${maven_path}" || "${maven_path}" == \#* ]] && continue
        jar="${LIBS_DIR}/$(basename "${maven_path}")"
        wanted+="$(basename "${maven_path}")"$'\n'
        if [[ -f "${jar}" ]] && echo "${digest}  ${jar}" | sha256sum --check --status; then
            continue
        fi
        curl --silent --show-error --fail --location --retry 5 -o "${jar}.part" "${MAVEN_REPOSITORY}/${maven_path}"
        if ! echo "${digest}  ${jar}.part" | sha256sum --check --status; then
            rm -f "${jar}.part"
            log "checksum mismatch for ${maven_path}: refusing to install it"
            exit 1
        fi
        mv "${jar}.part" "${jar}"
    done <<<"${lock}"
    for jar in "${LIBS_DIR}"/*.jar; do
        if ! grep -qxF "$(basename "${jar}")" <<<"${wanted}"; then
            rm -f "${jar}"
        fi
    done
    log "$(grep -c . <<<"${wanted}") jars installed in ${LIBS_DIR}"
}

advertised_host() {
    if [[ -n "${KAFKA_ADVERTISED_HOST:-}" ]]; then
        printf '%s' "${KAFKA_ADVERTISED_HOST}"
    else
        metadata "network-interfaces/0/ip"
    fi
}

write_config() {
    local advertised
    advertised="$(advertised_host)"
    mkdir -p "${CONFIG_DIR}" "${LOG_DIRS}" "${APP_LOG_DIR}"
    cat >"${CONFIG_DIR}/server.properties" <<EOF
# Written by terraform/kafka/startup.sh at every boot of the VM and every start of the laptop's
# broker (python -m localstack up); change that script instead.
process.roles=broker,controller
node.id=1
# The controller listens on loopback only: nothing outside this machine needs it.
controller.quorum.bootstrap.servers=127.0.0.1:${CONTROLLER_PORT}
listeners=PLAINTEXT://${LISTEN_HOST}:${PORT},CONTROLLER://127.0.0.1:${CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://${advertised}:${PORT}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${LOG_DIRS}
num.partitions=${TOPIC_PARTITIONS}
log.retention.hours=${RETENTION_HOURS}
auto.create.topics.enable=false
# One broker: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=${GROUP_INITIAL_REBALANCE_DELAY_MS}
EOF
    # The properties format needs no extra jar (YAML would).
    cat >"${CONFIG_DIR}/log4j2.properties" <<EOF
# Written by terraform/kafka/startup.sh; change that script instead.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${APP_LOG_DIR}/server.log
appender.file.filePattern = ${APP_LOG_DIR}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = ${APP_LOG_FILE_SIZE}
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = ${APP_LOG_FILES}
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
# A line per request or per partition state change drowns what matters; warnings still show.
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
EOF
}

kafka_java() {
    java "${JVM_OPTIONS[@]}" "$@"
}

# The broker's command line, defined once: the unit's ExecStart and print_broker_command.
broker_command() {
    local java_bin
    java_bin="$(command -v java)"
    BROKER_COMMAND=("${java_bin}" "${JVM_OPTIONS[@]}" kafka.Kafka "${CONFIG_DIR}/server.properties")
}

print_broker_command() {
    broker_command
    printf '%s\0' "${BROKER_COMMAND[@]}"
}

# Once per data disk: a cluster id and this node as the only voter of the KRaft quorum.
format_storage() {
    if [[ -f "${LOG_DIRS}/meta.properties" ]]; then
        return
    fi
    local cluster_id
    cluster_id="$(kafka_java kafka.tools.StorageTool random-uuid)"
    log "formatting ${LOG_DIRS} for cluster ${cluster_id}"
    kafka_java kafka.tools.StorageTool format --cluster-id "${cluster_id}" \
        --config "${CONFIG_DIR}/server.properties" --standalone >/dev/null
}

write_unit() {
    broker_command
    mkdir -p "$(dirname "${UNIT_FILE}")"
    # Java expands the classpath wildcard itself, so ExecStart needs no shell.
    cat >"${UNIT_FILE}" <<EOF
[Unit]
Description=Apache Kafka broker and KRaft controller
Wants=network-online.target
After=network-online.target local-fs.target

[Service]
User=${SERVICE_USER}
ExecStart=${BROKER_COMMAND[*]}
Restart=on-failure
RestartSec=5
LimitNOFILE=100000
TimeoutStopSec=120

[Install]
WantedBy=multi-user.target
EOF
}

start_service() {
    chown -R "${SERVICE_USER}:" "${DATA_MOUNT}" "${APP_LOG_DIR}"
    "${SYSTEMCTL}" daemon-reload
    "${SYSTEMCTL}" enable --now kafka.service
}

# The topic is created once and never altered; the broker may take a while to answer after boot.
create_topic() {
    local attempt
    for attempt in $(seq 1 60); do
        if kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:${PORT}" \
            --create --if-not-exists --topic "${TOPIC}" --partitions "${TOPIC_PARTITIONS}" \
            --replication-factor 1 >/dev/null 2>&1; then
            log "topic ${TOPIC} ready (attempt ${attempt})"
            return
        fi
        sleep 2
    done
    log "the broker did not answer on port ${PORT}; see ${APP_LOG_DIR}/server.log"
    exit 1
}

# What the VM runs at every boot, in this order.
STEPS=(
    install_java mount_data_disk ensure_service_user install_jars write_config format_storage
    write_unit start_service create_topic
)

# main [STEP...]: the named steps in the order given, else every step of STEPS.
main() {
    local step
    if (($# == 0)); then
        set -- "${STEPS[@]}"
    fi
    for step in "$@"; do
        if [[ " ${STEPS[*]} print_broker_command " != *" ${step} "* ]]; then
            log "unknown step ${step}; the steps are: ${STEPS[*]} print_broker_command"
            exit 2
        fi
    done
    for step in "$@"; do
        "${step}"
    done
}

main "$@"
