// The seed's JavaScript client (seeds/000_ebef05208bcd4c6e.txt, "Client Implementation"), unchanged
// except that its URLs are prefixed with BASE: Node's fetch needs absolute URLs.
// Usage: node render_with_jobs.mjs http://127.0.0.1:PORT projectId '{"floors": 3}'
// Prints the final job as JSON on the last line, after checking that its imageUrl serves a PNG.
const BASE = process.argv[2];

// ---- begin seed code (only `${BASE}` added) ----
async function renderWithJobs(projectId, conceptBrief) {
  // 1. Create job
  const createRes = await fetch(`${BASE}/api/jobs/render`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({
      projectId,
      renderType: 'axonometric',
      conceptInputs: conceptBrief,
    }),
  });
  
  const { jobId } = await createRes.json();
  
  // 2. Trigger processing (fire-and-forget)
  fetch(`${BASE}/api/jobs/${jobId}/process`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ projectId, conceptInputs: conceptBrief }),
  }).catch(() => {
    // Expected to timeout on free tier, but job continues
  });
  
  // 3. Poll for completion
  while (true) {
    await new Promise(resolve => setTimeout(resolve, 2000)); // Wait 2s
    
    const statusRes = await fetch(`${BASE}/api/jobs/${jobId}?projectId=${projectId}`);
    const { job } = await statusRes.json();
    
    if (job.status === 'completed') {
      console.log('Done!', job.imageUrl);
      return job;
    }
    
    if (job.status === 'failed') {
      throw new Error(job.error);
    }
    
    console.log(`Progress: ${job.progress}%`);
  }
}
// ---- end seed code ----

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

async function main() {
  const [projectId, brief] = [process.argv[3], JSON.parse(process.argv[4] || '{}')];
  const job = await renderWithJobs(projectId, brief);
  const image = await fetch(`${BASE}${job.imageUrl}`);
  const bytes = new Uint8Array(await image.arrayBuffer());
  const isPng = image.status === 200 && image.headers.get('content-type') === 'image/png'
    && PNG_MAGIC.every((byte, index) => bytes[index] === byte);
  if (!isPng) {
    throw new Error(`imageUrl ${job.imageUrl} did not serve a PNG (HTTP ${image.status})`);
  }
  console.log(JSON.stringify({ job, imageBytes: bytes.length }));
}

main().then(() => process.exit(0), (error) => {
  console.error(`renderWithJobs failed: ${error.message}`);
  process.exit(1);
});
