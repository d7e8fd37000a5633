#!/bin/sh
#SBATCH --job-name=slurm_minimal
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --output=/tmp/actogrid-jobs/slurm_minimal.out
#SBATCH --error=/tmp/actogrid-jobs/slurm_minimal.err
cd /tmp/actogrid-jobs || exit 1
# 1 runtime(s): one srun task per slot; one that fails does not stop the others
srun --kill-on-bad-exit=0 --nodes=1 --ntasks=1 --ntasks-per-node=1 env 'ACTOGRID_TOKEN=s3cr3t value' RUST_LOG=info /opt/app/bin/app node --deployer 10.0.0.1:7000 &
wait $!
