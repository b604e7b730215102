// The trainer binary: flags -> TrainConfig -> Trainer::run -> summary.
#include "runtime/run/trainer.h"

int main(int argc, char** argv) { return adasync::trainer_main(argc, argv); }
