#!/bin/sh
#OAR -n oar_ssh
#OAR -q default
#OAR -l nodes=4,walltime=1:30:00
#OAR -O /tmp/actogrid-jobs/oar_ssh.out
#OAR -E /tmp/actogrid-jobs/oar_ssh.err
cd /tmp/actogrid-jobs || exit 1
# one runtime per line of $OAR_NODEFILE
pids=
while read -r host; do
  oarsh "$host" 'env '\''ACTOGRID_TOKEN=s3cr3t value'\'' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000' < /dev/null &
  pids="$pids $!"
done < "$OAR_NODEFILE"
status=0
for pid in $pids; do
  wait "$pid" || status=$?
done
exit "$status"
