// Adds two vectors on the GPU and checks the result on the host. Prints the device it ran
// on, so the output shows which GPU the task was given. Exit 0 only when every sum is right.
#include <cstdio>
#include <cuda_runtime.h>

__global__ void add(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { \
    printf("CUDA error: %s (%s)\n", cudaGetErrorString(e), #x); return 2; } } while (0)

int main() {
    const int n = 1 << 20;
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    cudaDeviceProp p;
    CHECK(cudaGetDeviceProperties(&p, 0));
    printf("devices visible: %d; device 0: %s\n", count, p.name);
    float *a, *b, *c;
    CHECK(cudaMallocManaged(&a, n * sizeof(float)));
    CHECK(cudaMallocManaged(&b, n * sizeof(float)));
    CHECK(cudaMallocManaged(&c, n * sizeof(float)));
    for (int i = 0; i < n; i++) { a[i] = i; b[i] = 2.0f * i; }
    add<<<(n + 255) / 256, 256>>>(a, b, c, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    for (int i = 0; i < n; i++) {
        if (c[i] != 3.0f * i) { printf("wrong sum at %d: %f\n", i, c[i]); return 1; }
    }
    printf("vecadd ok: %d sums checked on the GPU\n", n);
    return 0;
}
