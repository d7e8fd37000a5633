#!/bin/sh
#$ -N sge_parallel
#$ -S /bin/sh
#$ -q all.q
#$ -pe mpi 6
#$ -l h_rt=01:00:00
#$ -l hostname=sge-n01|sge-n02|sge-n03
#$ -o /tmp/actogrid-jobs/sge_parallel.out
#$ -e /tmp/actogrid-jobs/sge_parallel.err
cd /tmp/actogrid-jobs || exit 1
# 6 runtime(s): one per slot of $PE_HOSTFILE
pids=
while read -r host nslots rest; do
  i=0
  while [ "$i" -lt "$nslots" ]; do
    qrsh -inherit -nostdin "$host" 'env SGE_ROOT=/opt/sge '\''ACTOGRID_TOKEN=s3cr3t value'\'' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000' < /dev/null &
    pids="$pids $!"
    i=$((i + 1))
  done
done < "$PE_HOSTFILE"
status=0
for pid in $pids; do
  wait "$pid" || status=$?
done
exit "$status"
