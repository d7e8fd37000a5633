#!/bin/sh
#$ -N sge_single
#$ -S /bin/sh
#$ -o /tmp/actogrid-jobs/sge_single.out
#$ -e /tmp/actogrid-jobs/sge_single.err
cd /tmp/actogrid-jobs || exit 1
# 1 runtime, in the job itself
env 'ACTOGRID_TOKEN=s3cr3t value' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000 &
wait $!
