// The trainer binary: flags -> TrainConfig -> Trainer::run -> summary.
#include "runtime/trainer.h"

int main(int argc, char** argv) { return adasync::trainer_main(argc, argv); }
