#!/bin/sh
#BSUB -J sweep-north
#BSUB -q normal
#BSUB -n 16
#BSUB -m "north-c01 north-c02 north-c03 north-c04"
#BSUB -R "span[ptile=4]"
#BSUB -o /tmp/actogrid-jobs/lsf_parallel.out
#BSUB -e /tmp/actogrid-jobs/lsf_parallel.err
cd /tmp/actogrid-jobs || exit 1
# 16 runtime(s): blaunch starts one per job slot
blaunch 'env '\''ACTOGRID_TOKEN=s3cr3t value'\'' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000' &
wait $!
