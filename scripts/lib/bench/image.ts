/** The one image every bench request carries: the client's deterministic picture as a JPEG. */
import { makeRawPicture } from '../client/images.js';

export async function benchImage(width: number, height: number): Promise<Buffer> {
  return (await makeRawPicture(1, width, height)).jpeg({ quality: 90 }).toBuffer();
}
