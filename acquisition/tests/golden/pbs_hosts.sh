#!/bin/sh
#PBS -N pbs_hosts
#PBS -S /bin/sh
#PBS -l nodes=node01+node02+node03
#PBS -o /tmp/actogrid-jobs/pbs_hosts.out
#PBS -e /tmp/actogrid-jobs/pbs_hosts.err
cd /tmp/actogrid-jobs || exit 1
# 3 runtime(s): pbsdsh starts one per line of $PBS_NODEFILE
pbsdsh -- /usr/bin/env 'ACTOGRID_TOKEN=s3cr3t value' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000 &
wait $!
