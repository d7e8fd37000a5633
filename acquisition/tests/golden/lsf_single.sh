#!/bin/sh
#BSUB -J lsf_single
#BSUB -q short
#BSUB -o /tmp/actogrid-jobs/lsf_single.out
#BSUB -e /tmp/actogrid-jobs/lsf_single.err
cd /tmp/actogrid-jobs || exit 1
# 1 runtime, in the job itself
env 'ACTOGRID_TOKEN=s3cr3t value' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000 &
wait $!
