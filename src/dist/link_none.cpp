// open_mpi_link() of a build without MPI (SKIFF_MPI=OFF or no MPI found at configure time).
#include "base/error.h"
#include "dist/link.h"

namespace skiff::dist {

std::unique_ptr<Link> open_mpi_link() {
  fail("pipeline stages need MPI, and this skiff was built without MPI (install libopenmpi-dev, reconfigure)");
}

std::string error_prefix() { return ""; }
void abort_job_after_error(int) {}

}  // namespace skiff::dist
