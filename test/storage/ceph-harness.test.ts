// The throwaway Ceph cluster (test/helpers/ceph.ts) answers S3 like any S3 endpoint: a bucket is
// created, an object put and read back through the AWS SDK, and stop() leaves nothing running.

import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCeph, type Ceph } from '../helpers/ceph.js';

describe('single-node Ceph with radosgw', () => {
  let ceph: Ceph;
  let s3: S3Client;
  beforeAll(async () => {
    ceph = await startCeph();
    s3 = new S3Client({
      endpoint: ceph.endpoint,
      region: ceph.region,
      forcePathStyle: true,
      credentials: { accessKeyId: ceph.accessKeyId, secretAccessKey: ceph.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  });
  afterAll(async () => {
    s3?.destroy();
    await ceph?.stop();
  });

  it('stores an object and returns the same bytes', async () => {
    const bucket = await ceph.createBucket();
    const body = randomBytes(300_000);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'a/b', Body: body }));
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'a/b' }));
    expect(Buffer.from(await got.Body!.transformToByteArray()).equals(body)).toBe(true);
  });

  it('stop() ends the gateway', async () => {
    const endpoint = ceph.endpoint;
    await ceph.stop();
    await expect(fetch(endpoint)).rejects.toThrow();
    ceph = undefined as unknown as Ceph;
  });
});
