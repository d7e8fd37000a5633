#!/bin/sh
#PBS -N sweep-pbs
#PBS -S /bin/sh
#PBS -q batch
#PBS -l nodes=8:ppn=2
#PBS -l walltime=02:00:00
#PBS -o /home/sweep/logs/pbs.out
#PBS -e /tmp/actogrid-jobs/pbs_count.err
cd /tmp/actogrid-jobs || exit 1
# 16 runtime(s): pbsdsh starts one per line of $PBS_NODEFILE
/usr/local/bin/pbsdsh -- /usr/bin/env 'ACTOGRID_TOKEN=s3cr3t value' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000 &
wait $!
