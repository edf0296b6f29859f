import { defineConfig } from 'vitest/config';

/** The tests `npm run mutation` runs against each mutant: the in-process ones (unit and security). */
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/security/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
    globalSetup: ['test/global-setup.ts'],
  },
});
