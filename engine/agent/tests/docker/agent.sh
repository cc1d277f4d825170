#!/bin/sh
# Test agent for nightcrier-agent's Docker tests; $1 selects the behaviour.
out=/home/agent/output/investigation.md
report() {
  {
    echo "# Investigation"
    echo
    echo "## Root Cause"
    echo "The pod web-1 crash-loops because its config map is missing; this line pads the report past 100 bytes."
  } >> "$out"
}
case "$1" in
good)
  echo "reading the incident"
  grep -q '"status": "investigating"' /home/agent/incident.json && echo "incident is investigating"
  echo "working on stderr" >&2
  report
  {
    echo "uid: $(id -u) gid: $(id -g)"
    grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
    echo "prompt has context: $(grep -c 'seen 3 times' /home/agent/prompt.md)"
    echo "context file: $(cat /home/agent/context/pre-triage.txt)"
    echo "model: $LLM_MODEL incident: $INCIDENT_ID"
    if [ -r /home/agent/.kube/config ]; then echo "kubeconfig: $(head -c 14 /home/agent/.kube/config) via $KUBECONFIG"; fi
    if [ -r /run/secrets/token ]; then echo "token file: $(cat /run/secrets/token | wc -c) bytes"; fi
  } >> "$out"
  echo "done"
  ;;
nonzero)
  echo "cannot reach the cluster" >&2
  report
  exit 3
  ;;
small)
  echo "tiny" > "$out"
  ;;
hang)
  echo "hanging forever"
  while true; do sleep 1; done
  ;;
flood)
  yes "flooding the log with a long line of text to fill the disk of the host" | head -c 20000000
  yes "flooding stderr too" | head -c 5000000 >&2
  report
  ;;
escape)
  attempt() {
    if sh -c "$2" 2>/dev/null; then echo "ALLOWED $1" >> "$out"; else echo "DENIED $1" >> "$out"; fi
  }
  report
  attempt incident "echo x > /home/agent/incident.json"
  attempt prompt "echo x > /home/agent/prompt.md"
  attempt permissions "echo x > /home/agent/incident_cluster_permissions.json"
  attempt context "echo x > /home/agent/context/evil"
  attempt home "echo x > /home/agent/evil"
  attempt etc "echo x > /etc/evil"
  attempt rootfs "echo x > /evil"
  attempt agent-log-append "echo x >> /home/agent/logs/agent-stdout.log"
  attempt agent-log-remove "rm -f /home/agent/logs/agent-full.log && ! test -e /home/agent/logs/agent-full.log"
  attempt scratch "echo ok > /tmp/scratch"
  attempt own-log "echo ok > /home/agent/logs/agent-notes.log"
  ;;
env)
  report
  if [ -n "$CARGO_PKG_NAME" ]; then echo "LEAKED CARGO_PKG_NAME" >> "$out"; else echo "absent CARGO_PKG_NAME" >> "$out"; fi
  if [ -n "$NC_TEST_SECRET" ]; then
    echo "secret present" >> "$out"
    printf %s "$NC_TEST_SECRET" | sha256sum > /home/agent/output/secret.sha256
  else
    echo "secret missing" >> "$out"
  fi
  echo "env has $(env | wc -l) variables"
  ;;
leak)
  # what a prompt-injected agent does with the key it was given
  echo "environment follows"
  env
  first=${NC_TEST_SECRET%"${NC_TEST_SECRET#????????????}"}
  printf 'split: %s' "$first"
  sleep 0.5
  printf '%s done\n' "${NC_TEST_SECRET#????????????}"
  printf %s "$NC_TEST_SECRET" | base64 -w 0; echo
  printf 'u:%s' "$NC_TEST_SECRET" | base64 -w 0; echo
  printf 'ab%s' "$NC_TEST_SECRET" | base64 -w 0 | tr '+/' '-_'; echo
  echo "stderr too: $NC_TEST_SECRET" >&2
  report
  env >> "$out"
  echo "Authorization: Basic $(printf 'u:%s' "$NC_TEST_SECRET" | base64 -w 0)" >> "$out"
  echo "token file: $(cat /run/secrets/token)" >> "$out"
  echo "key $NC_TEST_SECRET" > /home/agent/output/notes.txt
  echo "key $NC_TEST_SECRET" > /home/agent/logs/agent-notes.log
  ;;
fill)
  report
  i=0
  while [ $i -lt 400 ]; do yes "filling the host disk" | head -c 1048576 > /home/agent/output/chunk-$i; i=$((i+1)); done
  echo "wrote 400 MiB"
  while true; do sleep 1; done
  ;;
files)
  report
  mkdir /home/agent/output/many
  i=0
  while [ $i -lt 100000 ]; do : > /home/agent/output/many/f$i; i=$((i+1)); done
  echo "made 100000 files"
  while true; do sleep 1; done
  ;;
gated)
  echo "waiting for the go file"
  while [ ! -e /home/agent/output/go ]; do sleep 0.1; done
  echo "go seen, writing report"
  report
  ;;
noop)
  ;;
*)
  echo "unknown variant $1" >&2
  exit 64
  ;;
esac
